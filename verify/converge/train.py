"""One training run: an arm, a seed, the job's config. The loop is :func:`train`.

SGD (momentum 0.9) with a one-cycle learning rate (OneCycleLR: 30% cosine warm-up from lr/25 to
the peak, cosine down to lr/25e4), cross-entropy, the global batch shuffled per epoch by a
generator seeded with the run's seed (so the reference and a target see the same batches), the
held-out accuracy after every epoch. :class:`Monitor` watches every step: loss and logits
finite, every layer's gradient norm every ``grad_every`` steps (one host sync per step).
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from reference.data import ImageData, digits, synthetic
from verify.converge import checks
from verify.converge.checks import record, values_of
from verify.converge.config import ConvergeConfig
from verify.converge.controls import Arm
from verify.converge.distributed import Runtime, all_sum, any_rank, wrap
from verify.result import Result, Status


@dataclass
class RunResult:
    """What one run produced; JSON-serialisable with dataclasses.asdict."""

    arm: str
    role: str
    seed: int
    model: str
    data: str
    epochs: int
    loss: list[float] = field(default_factory=list)  # mean training loss per epoch
    test_loss: list[float] = field(default_factory=list)
    acc: list[float] = field(default_factory=list)  # held-out accuracy per epoch
    initial_loss: float | None = None
    epochs_to_threshold: int | None = None
    wall_s: float = 0.0  # the whole run: init checks, training, evaluation
    train_s: float = 0.0  # the training steps only
    images_per_s: float = 0.0
    grad_norm_min: list = field(default_factory=list)  # [layer, smallest norm per unit loss]
    grad_norm_max: list = field(default_factory=list)  # [layer, largest norm]
    failure: str | None = None  # why training stopped early (non-finite values)
    checks: list[Result] = field(default_factory=list)
    note: str = ""

    @property
    def passed(self) -> bool:
        return all(c.status != Status.FAILED for c in self.checks)


def load_data(cfg: ConvergeConfig) -> ImageData:
    maker = digits if cfg.data == "digits" else synthetic
    data = maker(size=cfg.image_size, seed=0)
    if cfg.train_limit is not None and cfg.train_limit < len(data.train):
        x, y = data.train.tensors
        n = cfg.train_limit
        data = ImageData(
            name=f"{data.name}[:{n}]",
            train=torch.utils.data.TensorDataset(x[:n], y[:n]),
            test=data.test,
            num_classes=data.num_classes,
            mean=data.mean,
            std=data.std,
        )
    return data


def autocast_for(arm: Arm, cfg: ConvergeConfig, rt: Runtime) -> str | None:
    if arm.autocast is not None:
        return arm.autocast
    amp = cfg.amp if cfg.amp is not None else rt.device.type == "cuda"
    return "bfloat16" if amp else None


def channels_last_for(arm: Arm, cfg: ConvergeConfig, rt: Runtime) -> bool:
    if arm.channels_last is not None:
        return arm.channels_last
    return cfg.channels_last if cfg.channels_last is not None else rt.device.type == "cuda"


def autocast_context(device: torch.device, dtype: str | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, dtype))


class Monitor:
    """What must never happen while training, watched at (almost) no cost.

    Every step: the loss and the logits are finite. A NaN or Inf in any activation reaches the
    logits (convolutions, BatchNorm's batch statistics, ReLU and pooling all propagate it), and a
    non-finite gradient reaches them one step later through the parameters. Every
    ``grad_every`` steps: each layer's gradient 2-norm, computed on the device (smallest and
    largest recorded for ``train.grad_norms``). One ``tolist()`` per step brings the verdict to
    the host. Only a bad step pays for :meth:`diagnose`, which says where it went bad.
    """

    def __init__(self, model: nn.Module, *, floor_from: int = 1, grad_every: int = 1) -> None:
        # The floor is on each layer's gradient norm per unit of loss, from step ``floor_from``
        # on (the job passes the second epoch's first step): the zero-init branches' gradients
        # start at exactly 0 and grow with their last gamma (below 1e-6 for the first 2-3 steps
        # of ResNet-50/digits), and once the data is fitted every gradient shrinks with the
        # loss (cross-entropy's dL/dlogits = p - y ~ L), which is not a vanishing gradient
        # (measured: 3.1e-6 absolute at loss 0.014, reference seed 2). The ceiling is absolute.
        self.model = model
        self.floor_from = floor_from
        self.grad_every = grad_every
        self.layers: list[str] = []
        self.params: list[nn.Parameter] = []
        owner: list[int] = []
        for name, module in model.named_modules():
            own = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if own:
                self.layers.append(name or "model")
                self.params.extend(own)
                owner.extend([len(self.layers) - 1] * len(own))
        device = self.params[0].device
        self._owner = torch.tensor(owner, device=device)
        self.low = torch.full((len(self.layers),), math.inf, device=device, dtype=torch.float64)
        self.low_abs = self.low.clone()  # the absolute smallest norms, for the report
        self.high = torch.zeros(len(self.layers), device=device, dtype=torch.float64)

    def layer_norms(self, tensors) -> torch.Tensor:
        """Each layer's 2-norm of ``tensors`` (one per parameter; None counts as zero)."""
        sq = torch.stack(
            [
                torch.linalg.vector_norm(t.detach(), dtype=torch.float64) ** 2
                if t is not None
                else torch.zeros((), dtype=torch.float64, device=self._owner.device)
                for t in tensors
            ]
        )
        return torch.zeros_like(self.low).index_add_(0, self._owner, sq).sqrt()

    def after_backward(self, loss: torch.Tensor, logits: torch.Tensor, step: int) -> bool:
        """True if this step is finite; records the layers' gradient norms on sampled steps."""
        flags = [loss.detach().double(), logits.detach().double().sum()]
        if step % self.grad_every == 0:
            layer = self.layer_norms([p.grad for p in self.params])
            if step >= self.floor_from:
                per_loss = layer / loss.detach().double().clamp_min(1e-30)
                self.low = torch.minimum(self.low, per_loss)
                self.low_abs = torch.minimum(self.low_abs, layer)
            self.high = torch.maximum(self.high, layer)
            flags.append(layer.sum())
        return all(math.isfinite(v) for v in torch.stack(flags).tolist())

    def diagnose(self, inputs: torch.Tensor, autocast: str | None) -> str:
        """Where a non-finite step went bad: parameters, the first bad output, gradients."""
        params = self.layer_norms(list(self.params)).tolist()
        bad = [n for n, v in zip(self.layers, params, strict=True) if not math.isfinite(v)]
        if bad:
            return f"non-finite parameters in {_some(bad)} (a non-finite update before)"
        watched = [("stem", self.model.act1)]
        watched += [(f"block{i}", b) for i, b in enumerate(self.model.blocks(), 1)]
        watched.append(("logits", self.model.fc))
        seen: list[str] = []

        def hook(name):
            def record(module, args, output):
                if not seen and not torch.isfinite(output).all():
                    seen.append(name)

            return record

        handles = [m.register_forward_hook(hook(n)) for n, m in watched]
        # SyncBatchNorm would wait for the other ranks in training mode: diagnose in eval there.
        sync = any(isinstance(m, nn.SyncBatchNorm) for m in self.model.modules())
        was_training = self.model.training
        self.model.train(was_training and not sync)
        try:
            with torch.no_grad(), autocast_context(inputs.device, autocast):
                self.model(inputs)
        finally:
            self.model.train(was_training)
            for h in handles:
                h.remove()
        if seen:
            return f"non-finite activations, first at {seen[0]}"
        grads = self.layer_norms([p.grad for p in self.params]).tolist()
        bad = [n for n, v in zip(self.layers, grads, strict=True) if not math.isfinite(v)]
        if bad:
            return f"non-finite gradients in {_some(bad)}"
        return "non-finite loss"

    def extremes(self) -> tuple[list, list]:
        """[layer, value]: the smallest norm per unit loss (from ``floor_from`` on), the largest
        norm."""
        lo, hi = self.low.tolist(), self.high.tolist()
        i, j = min(range(len(lo)), key=lo.__getitem__), max(range(len(hi)), key=hi.__getitem__)
        return [self.layers[i], lo[i]], [self.layers[j], hi[j]]

    def out_of_range(self, low: float, high: float) -> list[str]:
        out = []
        for name, lo, hi in zip(self.layers, self.low.tolist(), self.high.tolist(), strict=True):
            if lo < low or hi > high:
                shown = "-" if math.isinf(lo) else f"{lo:.2g}"
                out.append(f"{name} [{shown}, {hi:.2g}]")
        return out


def _some(names: list[str], k: int = 3) -> str:
    return ", ".join(names[:k]) + (f" and {len(names) - k} more" if len(names) > k else "")


def train_step(model, optimizer, scheduler, xb, yb, *, autocast, device, monitor, step):
    """One optimisation step with the checks: forward, loss, backward, verdict, update.

    Returns (loss, None), or (loss, where it went non-finite) without updating the model.
    """
    with autocast_context(device, autocast):
        logits = model(xb)
    loss = F.cross_entropy(logits.float(), yb)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if not monitor.after_backward(loss, logits, step):
        return loss, monitor.diagnose(xb, autocast)
    optimizer.step()
    scheduler.step()
    return loss, None


@torch.no_grad()
def evaluate(model, x, y, *, autocast, device, rt: Runtime, batch: int = 500) -> tuple:
    """(accuracy, mean loss) on this rank's share of the held-out set, summed over ranks."""
    model.eval()
    x, y = x[rt.rank :: rt.world], y[rt.rank :: rt.world]
    correct = total_loss = 0.0
    for i in range(0, len(y), batch):
        with autocast_context(device, autocast):
            logits = model(x[i : i + batch]).float()
        total_loss += float(F.cross_entropy(logits, y[i : i + batch], reduction="sum"))
        correct += float((logits.argmax(1) == y[i : i + batch]).sum())
    correct, total_loss, n = all_sum([correct, total_loss, float(len(y))], rt)
    model.train()
    return correct / n, total_loss / n


class Progress:
    """The live line: '\\r'-updated on a terminal, one line per epoch otherwise."""

    def __init__(self, enabled: bool, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.live = enabled and self.stream.isatty()

    def update(self, text: str, *, end_of_epoch: bool = False) -> None:
        if not self.enabled:
            return
        if self.live:
            self.stream.write("\r\033[K" + text + ("\n" if end_of_epoch else ""))
            self.stream.flush()
        elif end_of_epoch:
            print(text, file=self.stream, flush=True)


def train(
    arm: Arm, seed: int, cfg: ConvergeConfig, data: ImageData, rt: Runtime, progress: Progress
) -> RunResult:
    t_start = time.perf_counter()
    result = RunResult(
        arm=arm.name, role=arm.role, seed=seed, model=cfg.model, data=data.name, epochs=cfg.epochs
    )
    autocast = autocast_for(arm, cfg, rt)
    fmt = torch.channels_last if channels_last_for(arm, cfg, rt) else torch.contiguous_format
    x_train, y_train = (t.to(rt.device) for t in data.train.tensors)
    x_test, y_test = (t.to(rt.device) for t in data.test.tensors)
    x_train = x_train.to(dtype=arm.dtype, memory_format=fmt)
    x_test = x_test.to(dtype=arm.dtype, memory_format=fmt)

    torch.manual_seed(seed)
    model = arm.build(cfg.model, data.num_classes).to(rt.device, memory_format=fmt)

    # 1. Before training: the theory at init, on the first batch, on a copy of the model.
    gen = torch.Generator().manual_seed(seed)
    first = torch.randperm(len(y_train), generator=gen)[: cfg.batch_size].to(rt.device)
    result.checks += initial_checks(
        model, x_train[first], y_train[first], data.num_classes, autocast=autocast, arm=arm, rt=rt
    )
    result.initial_loss = values_of(result.checks[0]).get("loss")

    # 2. Training.
    steps = len(y_train) // cfg.batch_size
    monitor = Monitor(model, floor_from=steps if cfg.epochs > 1 else 1, grad_every=cfg.grad_every)
    model = wrap(model, rt, sync_bn=arm.norm_layer is nn.BatchNorm2d)
    if arm.compile:
        model = torch.compile(model)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * steps, cycle_momentum=False
    )
    gen = torch.Generator().manual_seed(seed)  # the same batches as the first-batch draw above
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        perm = torch.randperm(len(y_train), generator=gen).to(rt.device)
        loss_sum, t0 = torch.zeros((), device=rt.device, dtype=torch.float64), time.perf_counter()
        for i in range(steps):
            idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size][rt.rank :: rt.world]
            loss, problem = train_step(
                model, optimizer, scheduler, x_train[idx], y_train[idx],
                autocast=autocast, device=rt.device, monitor=monitor, step=(epoch - 1) * steps + i,
            )  # fmt: skip
            if any_rank(problem is not None, rt):
                result.failure = f"epoch {epoch} step {i + 1}: {problem or 'on another rank'}"
                break
            loss_sum += loss.detach()
            done = i + 1
            ips = done * cfg.batch_size / (time.perf_counter() - t0)
            last_acc = f"{result.acc[-1]:.2%}" if result.acc else "-"
            progress.update(
                f"{arm.name} seed {seed} | epoch {epoch}/{cfg.epochs} step {done}/{steps} | "
                f"loss {float(loss.detach()):.4f} | acc {last_acc} | {ips:.0f} img/s"
            )
        result.train_s += time.perf_counter() - t0
        if result.failure:
            progress.update(f"{arm.name} seed {seed} | {result.failure}", end_of_epoch=True)
            break
        train_loss = all_sum([float(loss_sum) / steps], rt)[0] / rt.world
        acc, test_loss = evaluate(model, x_test, y_test, autocast=autocast, device=rt.device, rt=rt)
        result.loss.append(train_loss)
        result.acc.append(acc)
        result.test_loss.append(test_loss)
        if result.epochs_to_threshold is None and acc >= cfg.threshold:
            result.epochs_to_threshold = epoch
        progress.update(
            f"{arm.name} seed {seed} | epoch {epoch}/{cfg.epochs} | loss {train_loss:.4f} | "
            f"acc {acc:.2%} | {epoch * steps * cfg.batch_size / result.train_s:.0f} img/s",
            end_of_epoch=True,
        )

    # 3. After training.
    result.wall_s = time.perf_counter() - t_start
    images = (len(result.loss) * steps) * cfg.batch_size
    result.images_per_s = images / result.train_s if result.train_s > 0 else 0.0
    result.grad_norm_min, result.grad_norm_max = monitor.extremes()
    result.checks.append(finite_check(result.failure))
    result.checks.append(grad_norm_check(monitor, cfg.grad_range))
    result.checks.append(checks.accuracy_check(result.acc, cfg.threshold, result.failure))
    return result


def initial_checks(model, x, y, num_classes, *, autocast, arm: Arm, rt: Runtime) -> list:
    """init.loss and init.stream on copies of the model at init (training mode)."""
    u = checks.unit_roundoff_for(autocast, arm.dtype)

    def forward(m, inputs):
        with autocast_context(rt.device, autocast):
            return m(inputs)

    probe = copy.deepcopy(model).train()
    seen = {}
    hook = probe.avgpool.register_forward_hook(lambda m, i, o: seen.__setitem__("f", o))
    with torch.no_grad():
        logits = forward(probe, x)
    hook.remove()
    loss = checks.initial_loss_check(
        torch.flatten(seen["f"], 1), logits, y, num_classes=num_classes, u=u
    )
    stream = checks.stream_check(copy.deepcopy(model).train(), x, forward=forward, u=u)
    return [loss, stream]


def finite_check(failure: str | None) -> Result:
    if failure is None:
        return record(
            "train.finite",
            Status.PASSED,
            "loss and logits finite at every step, gradients when sampled",
        )
    return record("train.finite", Status.FAILED, failure)


def grad_norm_check(monitor: Monitor, grad_range: tuple[float, float]) -> Result:
    (lo_name, lo), (hi_name, hi) = monitor.extremes()
    lo_abs = min(monitor.low_abs.tolist())
    values = {
        "min_per_loss": [lo_name, lo],
        "min_absolute": lo_abs,
        "max": [hi_name, hi],
        "range": list(grad_range),
        "every": monitor.grad_every,
    }
    allowed = f"[{grad_range[0]:g}, {grad_range[1]:g}]"
    bad = monitor.out_of_range(*grad_range)
    if bad:
        shown = ", ".join(bad[:4]) + (f", ... {len(bad) - 4} more" if len(bad) > 4 else "")
        msg = f"{len(bad)} layers' gradient norms (per unit loss, max) outside {allowed}: {shown}"
        return record("train.grad_norms", Status.FAILED, msg, values)
    floor = (
        f"smallest per unit loss {lo:.2g} ({lo_name}; absolute {lo_abs:.2g}) from step "
        f"{monitor.floor_from + 1}"
        if math.isfinite(lo)
        else "floor not applied (no step after the first epoch)"
    )
    msg = (
        f"layer gradient norms within {allowed} (every {monitor.grad_every} steps): {floor}; "
        f"largest {hi:.2g} ({hi_name})"
    )
    return record("train.grad_norms", Status.PASSED, msg, values)
