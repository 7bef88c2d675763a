"""Float64, obviously-correct, slow implementations: the expected values of the suite.

Modules, one per subject (import the one you need; nothing is imported here so that
``import reference`` stays cheap and a module's dependencies stay its own):

- :mod:`reference.batchnorm`: batch normalisation forward, backward, eval and running statistics
  (numpy, two-pass, exactly rounded sums).
- :mod:`reference.layernorm`: layer normalisation forward and backward over the trailing
  ``normalized_shape`` (two-pass, exactly rounded sums per row).
- :mod:`reference.rmsnorm`: RMSNorm forward and backward; ``eps=None`` as torch resolves it.
- :mod:`reference.groupnorm`: group normalisation as layer norm over each group, per-channel affine.
- :mod:`reference.prenorm`: the fused pre-norm tail ``residual += x; y = norm(residual)``, with the
  new stream rounded to its storage dtype before it is normalised.
- :mod:`reference.rows`: what the row normalisations share (input checks, exact per-row sums).
- :mod:`reference.selu`: SELU and AlphaDropout with the constants derived in :mod:`theory.selu`.
- :mod:`reference.init_laws`: the distributions ``torch.nn.init`` samplers should draw from, as
  frozen ``scipy.stats`` laws.
- :mod:`reference.residual`: readable BasicBlock / Bottleneck modules with pluggable parts.
- :mod:`reference.resnet`: the reference ResNet-50 (torchvision v1.5 layout) and its controls.
- :mod:`reference.data`: the scikit-learn digits images and a synthetic control set.
"""

__all__ = [
    "batchnorm",
    "data",
    "groupnorm",
    "init_laws",
    "layernorm",
    "prenorm",
    "residual",
    "resnet",
    "rmsnorm",
    "rows",
    "selu",
]
