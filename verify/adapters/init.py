"""Draw from any initialisation target: fresh tensors of a case's shape, filled by the sampler.

``options`` of an init target name the law it claims to sample: ``scheme`` ("xavier": takes
``gain``; "kaiming": takes ``a``, ``mode``, ``nonlinearity``) and ``law`` ("uniform" or
"normal"). A user's own sampler is a :class:`Target` with those options.
"""

from __future__ import annotations

import numpy as np
import torch

from verify.strategies.init import LAWS, SCHEMES, InitCase, init_kwargs
from verify.targets.base import Target


def scheme_and_law(target: Target) -> tuple[str, str] | None:
    """``(scheme, law)`` from the target's options, or None if it does not say."""
    scheme, law = target.options.get("scheme"), target.options.get("law")
    if scheme in SCHEMES and law in LAWS:
        return scheme, law
    return None


def describe_missing(target: Target) -> str:
    return (
        f"init target {target.name!r} has options={dict(target.options)!r}: give "
        f"options={{'scheme': one of {SCHEMES}, 'law': one of {LAWS}}} so the checks know "
        f"the law it samples"
    )


def draw(target: Target, case: InitCase) -> np.ndarray:
    """All values of ``case.tensors`` fresh tensors of ``case.shape`` filled by the target, as one
    float64 vector. torch is seeded with ``case.seed`` first, so the draw reproduces."""
    scheme, _ = scheme_and_law(target)
    kwargs = init_kwargs(scheme, case)
    torch.manual_seed(case.seed)
    chunks = []
    for _ in range(case.tensors):
        t = torch.empty(case.shape, dtype=target.torch_dtype, device=target.device)
        out = target.factory(t, **kwargs)
        # torch.nn.init returns the tensor it filled; accept a sampler that returns a new one.
        filled = out if isinstance(out, torch.Tensor) else t
        if tuple(filled.shape) != tuple(case.shape):
            raise ValueError(
                f"{target.name}: returned shape {tuple(filled.shape)} for a weight "
                f"of shape {case.shape}"
            )
        chunks.append(filled.detach().to(device="cpu", dtype=torch.float64).reshape(-1))
    return torch.cat(chunks).numpy()
