"""Initialisation targets: torch.nn.init's samplers (verify.adapters.init draws from any of them).

An init target's factory is a function ``(tensor, **kwargs)`` that fills ``tensor`` in place
like ``torch.nn.init.xavier_uniform_``. ``options`` names the law it claims to sample:
``scheme`` ("xavier": takes ``gain``; "kaiming": takes ``a``, ``mode``, ``nonlinearity``) and
``law`` ("uniform" or "normal"). A user's own sampler is a :class:`Target` with those options.
"""

from __future__ import annotations

import functools

import torch

from verify.targets.base import Target


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
