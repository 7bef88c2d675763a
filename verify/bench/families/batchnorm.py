"""Batch norm's benchmark: training and eval forward, the backward, and the residual tail
``relu(bn(x) + shortcut)``, at the sizes of ResNet-50's batch norms.

Minimum bytes, for x of shape (N, C, H, W) (``act`` bytes in the target's dtype) and per-channel
vectors of C float32 values (``vec`` = 4C bytes): each input read once, each output written once.

- fwd-train: read x, gamma, beta, running mean and variance; write y, the running statistics
  and the saved batch mean and 1/std its backward takes: 2 act + 8 vec.
- fwd-eval: read x, gamma, beta, running mean and variance; write y: 2 act + 4 vec.
- bwd-train: read dy, x, gamma, the saved mean and 1/std; write dx, dgamma, dbeta: 3 act + 6 vec.
- tail-train: as fwd-train, and the shortcut read: 3 act + 8 vec.
"""

from __future__ import annotations

from verify.bench.families.base import PARAM_BYTES, FamilyBench, Op, Size, activation_bytes

#: Batch: ResNet-50's per-GPU training batch (the CPU divides it: 8, and 2 with --quick).
GPU_BATCH = 32


def _bytes(acts: int, vecs: int):
    def count(shape, dtype) -> int:
        return acts * activation_bytes(shape, dtype) + vecs * shape[1] * PARAM_BYTES

    return count


def _fused_tail_evidence(target, op: str) -> list[tuple[str, str]]:
    """The fused Triton tail (BN + add + ReLU in one kernel) is verified through the residual
    block built on it; a Triton batch norm's own checks do not cover the add and the ReLU."""
    if op == "tail-train" and "triton" in target.requires:
        return [("triton-basic-fused-tail", "residual.forward")]
    return []


BENCH = FamilyBench(
    family="batchnorm",
    axes="N, C, H, W",
    size_column="layer",
    ranks=(4,),
    module=lambda factory, shape: factory(shape[1]),
    ops=(
        Op(
            name="fwd-train",
            what="forward, training mode (batch statistics, running-statistics update)",
            kind="forward",
            checks=("batchnorm.forward",),
            min_bytes=_bytes(2, 8),
        ),
        Op(
            name="fwd-eval",
            what="forward, eval mode (running statistics), no autograd",
            kind="forward-eval",
            checks=("batchnorm.eval",),
            min_bytes=_bytes(2, 4),
            training=False,
        ),
        Op(
            name="bwd-train",
            what="backward of a training-mode forward: dx, dgamma, dbeta",
            kind="backward",
            checks=("batchnorm.backward",),
            min_bytes=_bytes(3, 6),
        ),
        Op(
            name="tail-train",
            what="residual tail relu(bn(x) + shortcut), training-mode forward",
            kind="bn-relu-tail",
            checks=("batchnorm.forward",),
            min_bytes=_bytes(3, 8),
        ),
    ),
    # (C, H, W) of batch norms in ResNet-50 (v1.5, 224x224 input): the first bottleneck's inner
    # width, and each stage's output (bn3 / the projection shortcut's BN). Backward in eval mode
    # is left out: no check verifies it.
    sizes=(
        Size("layer1 bn1/bn2", (GPU_BATCH, 64, 56, 56), quick=True),
        Size("layer1 bn3", (GPU_BATCH, 256, 56, 56)),
        Size("layer2 bn3", (GPU_BATCH, 512, 28, 28)),
        Size("layer3 bn3", (GPU_BATCH, 1024, 14, 14)),
        Size("layer4 bn3", (GPU_BATCH, 2048, 7, 7), quick=True),
    ),
    evidence=_fused_tail_evidence,
)
