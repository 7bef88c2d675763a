"""Float64, obviously-correct, slow implementations: the expected values of the suite.

Modules, one per subject (import the one you need; nothing is imported here so that
``import reference`` stays cheap and a module's dependencies stay its own):

- :mod:`reference.batchnorm`: batch normalisation forward, backward, eval and running statistics
  (numpy, two-pass, exactly rounded sums).
- :mod:`reference.selu`: SELU and AlphaDropout with the constants derived in :mod:`theory.selu`.
- :mod:`reference.init_laws`: the distributions ``torch.nn.init`` samplers should draw from, as
  frozen ``scipy.stats`` laws.
- :mod:`reference.residual`: readable BasicBlock / Bottleneck modules with pluggable parts.
- :mod:`reference.resnet`: the reference ResNet-50 (torchvision v1.5 layout) and its controls.
- :mod:`reference.data`: the scikit-learn digits images and a synthetic control set.
"""

__all__ = ["batchnorm", "data", "init_laws", "residual", "resnet", "selu"]
