"""Does the checked training loop cost anything over a plain PyTorch loop? Measure both.

Two copies of the same model (same seed, same weights) train on the same batches: one with the
textbook loop (forward, cross-entropy, zero_grad, backward, step, scheduler step), one with
:func:`verify.converge.train.train_step` and its :class:`~verify.converge.train.Monitor` (the
finiteness checks, the per-layer gradient norms every ``grad_every`` steps and the one host sync
per step), as :func:`train` runs it.
They alternate step by step (order swapped every pair), so a neighbour's load on a shared
machine hits both alike; the overhead is the median of the paired ratios, with the spread
(quartiles) of those ratios next to it.
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
import torch.nn.functional as F

from reference.data import ImageData
from verify.converge.config import ConvergeConfig
from verify.converge.controls import reference_arm
from verify.converge.distributed import Runtime, any_rank
from verify.converge.train import (
    Monitor,
    autocast_context,
    autocast_for,
    channels_last_for,
    train_step,
)


def bench_overhead(
    cfg: ConvergeConfig, rt: Runtime, data: ImageData, *, steps: int = 20, block: int = 1
) -> dict:
    """Median step time of the plain loop and of varguard's, and their ratio."""
    arm = reference_arm()
    autocast = autocast_for(arm, cfg, rt)
    fmt = torch.channels_last if channels_last_for(arm, cfg, rt) else torch.contiguous_format
    torch.manual_seed(cfg.first_seed)
    plain_model = arm.build(cfg.model, data.num_classes).to(rt.device, memory_format=fmt).train()
    ours_model = copy.deepcopy(plain_model)
    monitor = Monitor(ours_model, grad_every=cfg.grad_every)
    counter = iter(range(10**9))  # the step numbers, so grad_every samples as in training
    x, y = (t.to(rt.device) for t in data.train.tensors)
    x = x.to(memory_format=fmt)
    gen = torch.Generator().manual_seed(cfg.first_seed)
    batches = [
        torch.randperm(len(y), generator=gen)[: cfg.batch_size].to(rt.device) for _ in range(block)
    ]

    def optimiser(model):
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr / 25, momentum=cfg.momentum)
        total = 2 * (steps + 2 * block)
        return opt, torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=total, cycle_momentum=False
        )

    plain_opt, plain_sched = optimiser(plain_model)
    ours_opt, ours_sched = optimiser(ours_model)

    def sync():
        if rt.device.type == "cuda":
            torch.cuda.synchronize(rt.device)

    def plain_block() -> list[float]:
        times = []
        for idx in batches:
            t = time.perf_counter()
            with autocast_context(rt.device, autocast):
                out = plain_model(x[idx])
            loss = F.cross_entropy(out.float(), y[idx])
            plain_opt.zero_grad(set_to_none=True)
            loss.backward()
            plain_opt.step()
            plain_sched.step()
            sync()
            times.append(time.perf_counter() - t)
        return times

    def ours_block() -> list[float]:
        times = []
        loss_sum = torch.zeros((), device=rt.device, dtype=torch.float64)
        for idx in batches:
            t = time.perf_counter()
            loss, problem = train_step(
                ours_model, ours_opt, ours_sched, x[idx], y[idx],
                autocast=autocast, device=rt.device, monitor=monitor, step=next(counter),
            )  # fmt: skip
            any_rank(problem is not None, rt)
            loss_sum += loss.detach()
            sync()
            times.append(time.perf_counter() - t)
        return times

    for _ in range(2):  # warm-up: allocator, oneDNN/cuDNN algorithm choice
        plain_block(), ours_block()
    plain_times, ours_times = [], []
    for i in range(max(1, steps // block)):
        if i % 2:
            o, p = ours_block(), plain_block()
        else:
            p, o = plain_block(), ours_block()
        plain_times += p
        ours_times += o
    ratios = sorted(o / p for o, p in zip(ours_times, plain_times, strict=True))
    q1, ratio, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    p, o = statistics.median(plain_times), statistics.median(ours_times)
    n = len(plain_times)
    return {
        "model": cfg.model,
        "grad_every": cfg.grad_every,
        "device": str(rt.device),
        "batch_size": cfg.batch_size,
        "steps_each": n,
        "plain_median_s": p,
        "varguard_median_s": o,
        "ratio": ratio,  # median of the paired ratios varguard step / plain step
        "ratio_quartiles": [q1, q3],
        "plain_step_s": plain_times,
        "varguard_step_s": ours_times,
        "message": (
            f"loop overhead: varguard step {o * 1e3:.1f} ms vs plain PyTorch step "
            f"{p * 1e3:.1f} ms (medians of {n} steps each, alternating): ratio {ratio:.3f} "
            f"(median of paired ratios; quartiles {q1:.3f}-{q3:.3f})"
        ),
    }
