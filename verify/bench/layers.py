"""What `varguard bench` times, as plain data (no torch): the operations and ResNet-50's layer
sizes. The report reads these to label and order its benchmark section."""

from __future__ import annotations

from collections.abc import Iterable

#: The operations timed. Backward in eval mode is left out: no check verifies it.
OPS: dict[str, str] = {
    "fwd-train": "forward, training mode (batch statistics, running-statistics update)",
    "fwd-eval": "forward, eval mode (running statistics), no autograd",
    "bwd-train": "backward of a training-mode forward: dx, dgamma, dbeta",
    "tail-train": "residual tail relu(bn(x) + shortcut), training-mode forward",
}

#: (C, H, W) of batch norms in ResNet-50 (v1.5, 224x224 input): the first bottleneck's inner
#: width, and each stage's output (bn3 / the projection shortcut's BN).
RESNET50_LAYERS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("layer1 bn1/bn2", (64, 56, 56)),
    ("layer1 bn3", (256, 56, 56)),
    ("layer2 bn3", (512, 28, 28)),
    ("layer3 bn3", (1024, 14, 14)),
    ("layer4 bn3", (2048, 7, 7)),
)
#: Batch: ResNet-50's per-GPU training batch on a GPU; smaller where a CPU would take minutes.
GPU_BATCH, CPU_BATCH, QUICK_CPU_BATCH = 32, 8, 2

#: Parameters and statistics are float32 whatever the activation dtype (mixed precision).
PARAM_BYTES = 4


def layer_name(shape: Iterable[int]) -> str:
    chw = tuple(shape)[1:]
    return next((name for name, s in RESNET50_LAYERS if s == chw), "custom")
