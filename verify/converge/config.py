"""What a convergence job is: one dataclass, validated once, shared by every run of the job.

The defaults are DESIGN.md's measured setup: the reference ResNet-50 (torchvision's v1.5 layout
with the ImageNet stem, 32x32 digits -> 8x8 after the stem), SGD with momentum 0.9, a one-cycle
learning rate peaking at 0.1, batch 64, zero-init of each branch's last BN gamma, float32.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

#: Models ``converge`` can train. "resnet50" is the default and the point of the command; the
#: small ones exist so that the test suite can run a whole job in seconds on two CPU cores.
MODELS = ("resnet50", "resnet18", "tiny")
DATASETS = ("digits", "synthetic")
DEVICES = ("auto", "cpu", "cuda")
CONTROLS = ("plain", "no-bn")


@dataclass
class ConvergeConfig:
    targets: list[str] = field(default_factory=lambda: ["torch-eager"])
    model: str = "resnet50"
    data: str = "digits"
    image_size: int = 32  # digits' 8x8 images are upsampled to this (DESIGN: 32)
    train_limit: int | None = None  # use only the first N training images (tests)
    epochs: int = 8
    seeds: int = 3  # K seeds: model init and batch order; the data split is fixed
    first_seed: int = 0
    batch_size: int = 64  # the global batch: under torchrun each rank takes batch/world
    lr: float = 0.1  # one-cycle peak (torch.optim.lr_scheduler.OneCycleLR, cosine, 30% warm-up)
    momentum: float = 0.9  # kept constant (cycle_momentum=False), as in DESIGN.md
    weight_decay: float = 0.0
    threshold: float = 0.95  # held-out accuracy a run must reach (DESIGN: 97.8% after 8 epochs)
    alpha: float = 0.01  # one-sided t-test level for "target needs more epochs than reference"
    controls: tuple[str, ...] = CONTROLS
    control_seeds: int = 1  # controls are reported, not gated: one seed each by default
    grad_range: tuple[float, float] = (1e-6, 1e3)  # allowed per-layer gradient 2-norm
    # Layer gradient norms every k-th step: reading every gradient (94 MB for ResNet-50) costs
    # ~4.6 ms, 2% of a 2-core CPU step; a non-finite gradient is caught at the next step anyway.
    grad_every: int = 4
    device: str = "auto"  # auto: CUDA when present, else CPU
    amp: bool | None = None  # autocast (bf16) in the network; None: on for CUDA, off for CPU
    channels_last: bool | None = None  # None: on for CUDA, off for CPU
    progress: bool = True

    def __post_init__(self) -> None:
        self.targets = list(self.targets)
        self.controls = tuple(self.controls)
        self.grad_range = tuple(float(v) for v in self.grad_range)
        if not self.targets:
            raise ValueError("targets is empty: give at least one --target (e.g. torch-eager)")
        _choice(self.model, "model", MODELS)
        _choice(self.data, "data", DATASETS)
        _choice(self.device, "device", DEVICES)
        for c in self.controls:
            _choice(c, "controls", CONTROLS)
        _positive_int(self.image_size, "image_size", 8, "--image-size 32 is DESIGN's")
        _positive_int(self.epochs, "epochs", 1, "--epochs 8 reproduces DESIGN's 97.8%")
        _positive_int(self.seeds, "seeds", 1, "the t-test needs --seeds 2 or more")
        _positive_int(self.control_seeds, "control_seeds", 1, "--control-seeds 1")
        _positive_int(self.batch_size, "batch_size", 2, "--batch-size 64 is DESIGN's")
        _positive_int(self.first_seed, "first_seed", 0, "--first-seed 0")
        _positive_int(self.grad_every, "grad_every", 1, "--grad-every 1 checks every step")
        if self.train_limit is not None:
            _positive_int(self.train_limit, "train_limit", self.batch_size, "use >= batch_size")
        for name, lo, hi in (("lr", 0.0, math.inf), ("momentum", 0.0, 1.0)):
            value = getattr(self, name)
            if not lo <= value < hi or (name == "lr" and value == 0):
                raise ValueError(f"{name}={value!r} is out of range; use e.g. {name}=0.1/0.9")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(
                f"threshold={self.threshold!r}: a held-out accuracy, so in (0, 1]; e.g. 0.95"
            )
        if not 0.0 < self.alpha < 0.5:
            raise ValueError(f"alpha={self.alpha!r}: a test level in (0, 0.5); e.g. 0.01")
        lo, hi = self.grad_range
        if not 0.0 <= lo < hi:
            raise ValueError(f"grad_range={self.grad_range!r}: need 0 <= low < high")

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def to_dict(self) -> dict:
        return asdict(self)


def _choice(value, name: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r}; use one of {', '.join(allowed)}")


def _positive_int(value, name: str, minimum: int, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r}: must be an integer >= {minimum}; {hint}")
