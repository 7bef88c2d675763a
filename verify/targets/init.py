"""Initialisation targets: torch.nn.init's samplers, and the adapter that draws from any of them.

An init target's factory is a function ``(tensor, **kwargs)`` that fills ``tensor`` in place
like ``torch.nn.init.xavier_uniform_``. ``options`` names the law it claims to sample:
``scheme`` ("xavier": takes ``gain``; "kaiming": takes ``a``, ``mode``, ``nonlinearity``) and
``law`` ("uniform" or "normal"). A user's own sampler is a :class:`Target` with those options.
"""

from __future__ import annotations

import functools

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


def builtin() -> list[Target]:
    t = functools.partial(Target, family="init")
    nn_init = torch.nn.init
    return [
        t(
            name="torch-xavier-uniform",
            factory=nn_init.xavier_uniform_,
            options={"scheme": "xavier", "law": "uniform"},
            description="torch.nn.init.xavier_uniform_, float32",
        ),
        t(
            name="torch-xavier-normal",
            factory=nn_init.xavier_normal_,
            options={"scheme": "xavier", "law": "normal"},
            description="torch.nn.init.xavier_normal_, float32",
        ),
        t(
            name="torch-kaiming-uniform",
            factory=nn_init.kaiming_uniform_,
            options={"scheme": "kaiming", "law": "uniform"},
            description="torch.nn.init.kaiming_uniform_, float32",
        ),
        t(
            name="torch-kaiming-normal",
            factory=nn_init.kaiming_normal_,
            options={"scheme": "kaiming", "law": "normal"},
            description="torch.nn.init.kaiming_normal_, float32",
        ),
        t(
            name="torch-xavier-uniform-float64",
            factory=nn_init.xavier_uniform_,
            dtype="float64",
            options={"scheme": "xavier", "law": "uniform"},
            description="torch.nn.init.xavier_uniform_ on a float64 tensor",
        ),
        t(
            name="torch-kaiming-normal-float64",
            factory=nn_init.kaiming_normal_,
            dtype="float64",
            options={"scheme": "kaiming", "law": "normal"},
            description="torch.nn.init.kaiming_normal_ on a float64 tensor",
        ),
    ]
