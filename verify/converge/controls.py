"""The arms of a convergence job: the target(s), the reference, and the controls.

Every arm is the same network on the same data, seeds and budget, with one thing changed:

- ``reference``: torch.nn.BatchNorm2d, the implementation a target is compared with;
- a target: its BatchNorm (and its residual add, where it provides one in
  ``target.options["residual_add"]``) in place of the reference's;
- ``plain-50`` (``plain``): no skip connections (He et al. 2016, Section 4.1): the degradation
  control. Zero-init is impossible without shortcuts (it would zero the whole signal), so its last
  gammas start at 1;
- ``no-bn``: every BatchNorm replaced by the identity, everything else as in the reference.
  With no gamma there is no zero-init either, so this is what the theory says BatchNorm buys:
  the stream's variance grows block by block (De & Smith 2020) and the initial loss is not ln C.

Controls run with the reference BatchNorm; they are reported, never gated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from reference.resnet import ResNet, ResNetConfig
from verify.targets.base import Target

TARGET, REFERENCE, CONTROL = "target", "reference", "control"
REFERENCE_NAME = "reference"
#: The plain control is named after the depth of the network it strips ("plain-50").
DEPTHS = {"resnet50": 50, "resnet18": 18, "tiny": 10}

#: What "--model" builds: the reference ResNet-50 by default; small variants for tests.
MODEL_LAYOUTS: dict[str, dict] = {
    "resnet50": {"block": "bottleneck", "layers": (3, 4, 6, 3)},
    "resnet18": {"block": "basic", "layers": (2, 2, 2, 2)},
    "tiny": {"block": "basic", "layers": (1, 1, 1, 1)},  # ResNet-10: 4 residual blocks
}


def no_norm(num_features: int, *args, **kwargs) -> nn.Module:
    """BatchNorm2d's constructor, no normalisation: the "without BatchNorm" control's layer."""
    return nn.Identity()


@dataclass(frozen=True)
class Arm:
    """One network variant to train: how to build it and how to run it."""

    name: str
    role: str  # TARGET, REFERENCE or CONTROL
    norm_layer: Callable[[int], nn.Module]
    residual_add: Callable | None = None
    skip: bool = True
    zero_init: bool = True
    dtype: torch.dtype = torch.float32  # the model's parameters
    autocast: str | None = None  # dtype name; None: the job's default (bf16 on CUDA, off on CPU)
    channels_last: bool | None = None  # None: the job's default
    compile: bool = False
    unavailable: str | None = None  # why it cannot run here (reported as skipped)
    shares_reference: bool = False  # same implementation and settings as the reference
    description: str = ""

    def build(self, model: str, num_classes: int) -> ResNet:
        layout = MODEL_LAYOUTS[model]
        return ResNet(
            ResNetConfig(
                **layout,
                num_classes=num_classes,
                norm_layer=self.norm_layer,
                residual_add=self.residual_add,
                skip=self.skip,
                zero_init_residual=self.zero_init,
                dtype=self.dtype,
            )
        )


def reference_arm() -> Arm:
    return Arm(
        name=REFERENCE_NAME,
        role=REFERENCE,
        norm_layer=nn.BatchNorm2d,
        description="torch.nn.BatchNorm2d (the reference), float32",
    )


def target_arm(target: Target) -> Arm:
    """The arm that trains ``target``'s BatchNorm, honouring its dtype, layout and autocast."""
    if target.family != "batchnorm":
        raise ValueError(
            f"target={target.name!r} is of family {target.family!r}; converge trains a network "
            f"with a target's BatchNorm, so give a batchnorm target (e.g. torch-eager)"
        )
    if "train" not in target.modes:
        raise ValueError(
            f"target={target.name!r} exists only for inference ({target.modes}); converge "
            f"needs a BatchNorm that trains"
        )
    dtype = target.torch_dtype
    autocast = target.autocast
    if dtype in (torch.float16, torch.bfloat16):
        # Half-precision BatchNorm runs in a network as mixed precision: float32 parameters,
        # half activations under autocast (as the target's own adapter runs it).
        autocast, dtype = autocast or target.dtype, torch.float32
    residual_add = target.options.get("residual_add")
    shares = (
        target.factory is nn.BatchNorm2d
        and dtype == torch.float32
        and autocast is None
        and target.memory_format == "contiguous"
        and not target.compile
        and residual_add is None
        and not target.options
        and target.device == "cpu"
    )
    return Arm(
        name=target.name,
        role=TARGET,
        norm_layer=target.factory,
        residual_add=residual_add,
        dtype=dtype,
        autocast=autocast,
        channels_last=True if target.memory_format == "channels_last" else None,
        compile=target.compile,
        unavailable=target.unavailable(),
        shares_reference=shares,
        description=target.description,
    )


def control_arms(names: tuple[str, ...], model: str) -> list[Arm]:
    arms = []
    for key in names:
        if key == "plain":
            arms.append(
                Arm(
                    name=f"plain-{DEPTHS[model]}",
                    role=CONTROL,
                    norm_layer=nn.BatchNorm2d,
                    skip=False,
                    zero_init=False,
                    description=f"{model} without skip connections (He et al. 2016)",
                )
            )
        elif key == "no-bn":
            arms.append(
                Arm(
                    name="no-bn",
                    role=CONTROL,
                    norm_layer=no_norm,
                    zero_init=False,
                    description=f"{model} with every BatchNorm replaced by the identity",
                )
            )
    return arms
