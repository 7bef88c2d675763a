"""The convergence checks: before training (theory at init), while training, after training.

Before training, on the first training batch, in training mode (batch statistics), on a copy of
the freshly initialised network (so the run itself starts untouched):

``init.loss`` -- with each branch's last gamma at zero every residual block starts as
``relu(shortcut(x))``, the pooled features are post-ReLU outputs of a BatchNorm, and the logits
are the classifier's random init applied to them. theory.residual.initial_loss says the loss is
then ln C. The tolerance is derived, not tuned (false-alarm rate below FALSE_ALARM in all):

* Exactly, per sample: ``l_i = ln C - d_i + ln mean_k exp(delta_ik)``, with ``delta_i`` the
  logits minus their mean over the classes and ``d_i = delta_i[y_i]``. As mean_k delta_ik = 0,
  ``0 <= ln mean_k exp(delta_ik) <= range(delta_i)^2 / 8`` (Jensen below, Hoeffding's lemma
  above). So ``-D <= L - ln C <= -D + mean_i range_i^2 / 8``, D the batch mean of ``d_i``;
  the range term is the measured logit spread.
* D is linear in the classifier's weights and bias, which torch.nn.Linear draws independently
  from U(-a, a), a = 1/sqrt(fan_in), independently of the features and labels at init. Hoeffding's
  inequality: ``|D| <= a sqrt(2 sum c^2 ln(4/alpha))`` with probability 1 - alpha/2, where c are
  D's coefficients (computed from the features and labels, not from the logits).
* The spread itself must be what that init gives on BatchNorm-bounded features: a BN output
  channel has mean square ``var/(var+eps) <= 1`` over the batch and ReLU and average pooling only
  lower it, so ``mean f^2 <= 1``; each logit is a sum of ``fan_in`` independent terms (CLT:
  Gaussian, variance ``sigma_i^2 = a^2/3 (|f_i|^2 + 1)``), so the population variance over the C
  classes is ``sigma_i^2 chi2(C-1) / C``; a union bound over the batch gives
  ``mean_i Var_k(z_i) <= mean_i sigma_i^2 * chi2.isf(alpha/(4n), C-1) / C``.

``init.stream`` -- the residual stream at init, block by block (De & Smith 2020; theory.residual):

* as trained (zero-init): every branch outputs exactly 0, so theory.residual.stream_variance with
  branch gain 0 predicts an unchanged variance from each projection block to the next; the
  comparison is exact up to rounding.
* with the last gammas at 1 (the same weights otherwise), BatchNorm pins the branch's variance at
  ``mean_c var_c/(var_c+eps)`` (to the rounding bound of theory.rounding.bn_statistics_error), and
  ``Var(shortcut + F) = Var(shortcut) + Var(F)`` (stream_variance of one 'bn' block, less the eps
  deficit) up to the covariance of the two, which is the mean of C per-channel covariances, each
  symmetric about 0 (flipping the sign of row c of the branch's last conv flips F_c and nothing
  else) and independent across channels: a Student-t bound, Bonferroni over the blocks. The
  post-add ReLU of the v1.5 layout stops the linear growth var0 + L from chaining across blocks,
  so the prediction is applied block by block.

While training: ``train.finite`` (loss and logits at every step, which any non-finite activation
reaches, and gradients every ``grad_every`` steps; a bad step is then diagnosed: parameters, first
non-finite block output, gradients) and ``train.grad_norms`` (each layer's gradient 2-norm,
sampled every ``grad_every`` steps, at most ``grad_range[1]``; and, per unit of training loss, at
least ``grad_range[0]`` from the second epoch on. At the first step the zero-init branches get
exactly zero gradient, which is the theory, not a fault, and their gradients then grow with their
last gamma; once the data is fitted every gradient shrinks with the loss, as cross-entropy's
dL/dlogits = p - y does, which is not a vanishing gradient either).
After training: ``final.accuracy`` (held-out accuracy >= threshold) and, per target, the one-sided
Welch t-test ``compare.epochs_to_threshold`` against the reference over the same seeds.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F

from theory.residual import initial_loss, stream_variance
from theory.rounding import ELEMENTWISE_OPS, Precision, bn_statistics_error, gamma_prob
from theory.sampling import FALSE_ALARM
from verify.result import Result, Status

FAMILY = "converge"


def record(name: str, status: Status, message: str, values: dict | None = None) -> Result:
    """A convergence check's result for one run (``target`` is the arm, set by the job)."""
    return Result(
        check=f"{FAMILY}.{name}",
        target="",
        family=FAMILY,
        status=status,
        message=message,
        extra={"values": values or {}},
    )


def values_of(result: Result) -> dict:
    return result.extra.get("values", {})


# --- helpers ------------------------------------------------------------------------------------


def channel_variance(t: torch.Tensor) -> torch.Tensor:
    """Per-channel (biased) variance over batch and space, in float64: shape (C,)."""
    t = t.detach().double()
    return t.transpose(0, 1).reshape(t.shape[1], -1).var(dim=1, unbiased=False)


def _channel_rows(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().double()
    return t.transpose(0, 1).reshape(t.shape[1], -1)


def unit_roundoff_for(autocast: str | None, dtype: torch.dtype) -> float:
    name = autocast or str(dtype).removeprefix("torch.")
    return Precision.of(name).u


# --- init.loss ----------------------------------------------------------------------------------


def initial_loss_check(
    features: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int,
    u: float,
    alpha: float = FALSE_ALARM,
) -> Result:
    """``init.loss``: the first batch's loss against ln C with the tolerance derived above."""
    f, z = features.detach().double().cpu(), logits.detach().double().cpu()
    y = labels.cpu()
    n, d = f.shape
    c = num_classes
    loss = float(F.cross_entropy(z, y))
    ln_c = initial_loss(c)
    a = 1.0 / math.sqrt(d)  # torch.nn.Linear's U(-1/sqrt(fan_in), 1/sqrt(fan_in)), W and b
    mean_square = float(f.pow(2).mean())
    # Rounding slack of the features' mean square: BN's statistics over each channel.
    square_bound = 1.0 + 16.0 * u
    sigma2 = a * a / 3.0 * (f.pow(2).sum(dim=1) + 1.0)
    from scipy import stats

    q = float(stats.chi2.isf(alpha / (4 * n), c - 1))
    spread = float(z.var(dim=1, unbiased=False).mean())
    spread_bound = float(sigma2.mean()) * q / c
    onehot = F.one_hot(y, c).double() - 1.0 / c
    g = onehot.T @ f / n  # D's coefficients on the classifier's weights, (C, d)
    h = onehot.mean(dim=0)  # ... and on its bias, (C,)
    t_d = a * math.sqrt(2.0 * float(g.pow(2).sum() + h.pow(2).sum()) * math.log(4.0 / alpha))
    ranges = z.max(dim=1).values - z.min(dim=1).values
    quad = float(ranges.pow(2).mean()) / 8.0
    low, high = ln_c - t_d, ln_c + t_d + quad
    dev = loss - ln_c
    inside = low <= loss <= high  # False for NaN
    ok = inside and mean_square <= square_bound and spread <= spread_bound
    values = {
        "loss": loss,
        "ln_C": ln_c,
        "deviation": dev,
        "interval": [low, high],
        "tolerance": t_d + quad,
        "hoeffding_term": t_d,
        "range_term": quad,
        "logit_spread": spread,
        "logit_spread_bound": spread_bound,
        "feature_mean_square": mean_square,
        "alpha": alpha,
    }
    msg = (
        f"initial loss {loss:.4f} {'in' if inside else 'OUTSIDE'} [{low:.4f}, {high:.4f}] around "
        f"ln {c} = {ln_c:.4f} (-+ Hoeffding over the classifier's init {t_d:.3f}, + logit "
        f"range^2/8 {quad:.3f}); logit spread {spread:.4f} "
        f"{'<=' if spread <= spread_bound else '>'} {spread_bound:.4f}; features' mean square "
        f"{mean_square:.3f} {'<=' if mean_square <= square_bound else '>'} 1 (BatchNorm bound)"
    )
    return record("init.loss", Status.PASSED if ok else Status.FAILED, msg, values)


# --- init.stream --------------------------------------------------------------------------------


class _BlockProbe:
    """Records, per residual block, the variances the stream check compares (hooks, no copies)."""

    def __init__(self, model) -> None:
        self.rows: list[dict] = []
        self._undo = []
        for index, block in enumerate(model.blocks(), 1):
            row = {"block": index, "projection": block.downsample is not None}
            self.rows.append(row)
            original = block.residual_add

            def add(out, identity, _row=row, _orig=original):
                b, s = _channel_rows(out), _channel_rows(identity)
                _row["var_branch_c"] = b.var(dim=1, unbiased=False).detach().cpu()
                _row["var_shortcut"] = float(s.var(dim=1, unbiased=False).mean())
                cov = ((b - b.mean(1, keepdim=True)) * (s - s.mean(1, keepdim=True))).mean(1)
                _row["cov_c"] = cov.detach().cpu()
                result = _orig(out, identity)
                _row["var_sum"] = float(channel_variance(result).mean())
                return result

            block.residual_add = add
            self._undo.append((block, original))

            def pre(module, inputs, _row=row):
                _row["var_in"] = float(channel_variance(inputs[0]).mean())

            def post(module, inputs, output, _row=row):
                _row["var_out"] = float(channel_variance(output).mean())

            def norm_in(module, inputs, output, _row=row):
                x = _channel_rows(inputs[0])
                # On the host: the bounds are numpy (the first GPU run failed on .numpy() here).
                _row["bn_mean_c"] = x.mean(dim=1).detach().cpu()
                _row["bn_var_c"] = x.var(dim=1, unbiased=False).detach().cpu()
                _row["bn_m"] = x.shape[1]
                _row["bn_eps"] = float(getattr(module, "eps", 1e-5))

            self._undo.append(block.register_forward_pre_hook(pre))
            self._undo.append(block.register_forward_hook(post))
            self._undo.append(block.last_norm.register_forward_hook(norm_in))

    def remove(self) -> None:
        for item in self._undo:
            if isinstance(item, tuple):
                item[0].residual_add = item[1]
            else:
                item.remove()


def _set_last_gammas(model, value: float) -> None:
    with torch.no_grad():
        for block in model.blocks():
            weight = getattr(block.last_norm, "weight", None)
            if isinstance(weight, torch.Tensor):
                weight.fill_(value)


def stream_check(
    model, x: torch.Tensor, *, forward, u: float, alpha: float = FALSE_ALARM
) -> Result:
    """``init.stream``: the variance through the residual blocks against theory.residual."""
    blocks = list(model.blocks())
    if not blocks or not blocks[0].skip:
        return record("init.stream", Status.SKIPPED, "no skip connections: there is no stream")
    from scipy import stats

    rows_a = _probe(model, x, forward)
    gamma_one = copy.deepcopy(model)
    _set_last_gammas(gamma_one, 1.0)
    rows_b = _probe(gamma_one, x, forward)

    failures, table = [], []
    # (a) as trained: branches are 0, the stream is carried unchanged from each anchor (the stem
    # output, or a projection block's output) -- stream_variance(k, var0, branch=0).
    anchor, k = rows_a[0]["var_in"], 0
    worst_a = 0.0
    for row in rows_a:
        if row["projection"]:
            anchor, k = row["var_out"], 0
            predicted = row["var_out"]
        else:
            k += 1
            predicted = stream_variance(k, var0=anchor, branch=0.0)
        tol = 8.0 * u * predicted + 1e-30
        err = abs(row["var_out"] - predicted)
        branch = float(row["var_branch_c"].mean())
        worst_a = max(worst_a, err / tol, branch / (8.0 * u * max(row["var_shortcut"], 1e-30)))
        if not (err <= tol and branch <= 8.0 * u * row["var_shortcut"]):
            failures.append(
                f"zero-init block {row['block']}: Var(out) {row['var_out']:.6g} vs predicted "
                f"{predicted:.6g}, Var(branch) {branch:.3g} (must be 0)"
            )
        table.append({"block": row["block"], "var_out": row["var_out"], "predicted": predicted})

    # (b) last gammas at 1: BN pins Var(F); the add adds variances (one 'bn' block).
    z = float(stats.t.isf(alpha / (2 * len(rows_b)), max(1, rows_b[0]["cov_c"].numel() - 1)))
    worst_b = 0.0
    for row, out in zip(rows_b, table, strict=True):
        v, mean, eps, m = row["bn_var_c"], row["bn_mean_c"], row["bn_eps"], row["bn_m"]
        pinned = v / (v + eps)
        d_mean, d_var = bn_statistics_error(
            m, mean.numpy(), v.numpy(), Precision(storage="float32", accumulate="float32")
        )
        s = np.sqrt(v.numpy() + eps)
        kap = np.sqrt(1.0 + mean.numpy() ** 2 / s**2)
        # Var(x_hat) moves by at most 2 E|x_hat e| + E e^2 for an element error e bounded as in
        # theory.rounding.bn_normalize_error (E|x_hat| <= 1, E x_hat^2 <= 1).
        per_c = 2 * d_mean / s + d_var / s**2 + 4 * ELEMENTWISE_OPS * max(u, 2.0**-24) * kap
        pin_tol = float(np.mean(per_c)) + gamma_prob(m, u)
        var_f = float(row["var_branch_c"].mean())
        pin_pred = float(pinned.mean())
        cov = row["cov_c"]
        cov_tol = 2.0 * z * float(cov.std(unbiased=True)) / math.sqrt(cov.numel())
        predicted = stream_variance(1, var0=row["var_shortcut"], branch="bn") - (1.0 - pin_pred)
        sum_tol = pin_tol + cov_tol + 8.0 * u * predicted
        e_pin, e_sum = abs(var_f - pin_pred), abs(row["var_sum"] - predicted)
        worst_b = max(worst_b, e_pin / pin_tol, e_sum / sum_tol)
        if not (e_pin <= pin_tol and e_sum <= sum_tol):
            failures.append(
                f"gamma=1 block {row['block']}: Var(F) {var_f:.5f} vs BN's {pin_pred:.5f} "
                f"(+-{pin_tol:.2g}); Var(x+F) {row['var_sum']:.4f} vs Var(x)+Var(F) "
                f"{predicted:.4f} (+-{sum_tol:.3f})"
            )
        out.update(
            gamma1_var_shortcut=row["var_shortcut"],
            gamma1_var_branch=var_f,
            gamma1_var_sum=row["var_sum"],
            gamma1_predicted=predicted,
            gamma1_tolerance=sum_tol,
        )
    n = len(rows_a)
    if failures:
        blocks = len({f.split(":")[0].split()[-1] for f in failures})
        more = f"; ... {len(failures) - 3} more" if len(failures) > 3 else ""
        msg = f"{blocks} of {n} blocks off the theory: {'; '.join(failures[:3])}{more}"
        return record("init.stream", Status.FAILED, msg, {"blocks": table})
    msg = (
        f"{n} blocks: zero-init stream carried exactly (worst error/allowed {worst_a:.2g}); with "
        f"gammas at 1, Var(F) pinned by BN and Var(x+F) = Var(x)+Var(F) (worst {worst_b:.2g})"
    )
    return record("init.stream", Status.PASSED, msg, {"blocks": table})


def _probe(model, x, forward) -> list[dict]:
    probe = _BlockProbe(model)
    try:
        with torch.no_grad():
            forward(model, x)
    finally:
        probe.remove()
    return probe.rows


# --- after training -------------------------------------------------------------------------------


def accuracy_check(acc: list[float], threshold: float, failure: str | None) -> Result:
    final = acc[-1] if acc else float("nan")
    reached = next((i + 1 for i, a in enumerate(acc) if a >= threshold), None)
    ok = failure is None and final >= threshold
    where = f"first at epoch {reached}" if reached else "never reached"
    msg = f"held-out accuracy {final:.2%} {'>=' if ok else '<'} {threshold:.1%} ({where})"
    if failure:
        msg += f"; training stopped: {failure}"
    return record(
        "final.accuracy",
        Status.PASSED if ok else Status.FAILED,
        msg,
        {"final": final, "threshold": threshold},
    )


#: Variance of an epoch count's rounding: a run crosses the threshold somewhere inside the epoch
#: it is credited with, so each count is known to within one epoch (uniform: 1/12, Sheppard).
EPOCH_QUANTISATION_VAR = 1.0 / 12.0


def epochs_ttest(
    target: list[float], reference: list[float], *, alpha: float
) -> tuple[float | None, str]:
    """One-sided Welch t-test of H1 "the target needs more epochs than the reference".

    Returns (p, how). Runs that never reach the threshold enter censored at epochs + 1, a lower
    bound on their true count, so the test can only understate the target's slowness. Epoch
    counts are integers and often tie across seeds; a sample variance of 0 would make the t
    statistic infinite, so each sample's variance is taken as at least the rounding variance
    EPOCH_QUANTISATION_VAR (scipy.stats.ttest_ind_from_stats with those standard deviations).
    """
    t, r = np.asarray(target, dtype=float), np.asarray(reference, dtype=float)
    if len(t) < 2 or len(r) < 2:
        return None, "needs at least 2 seeds per arm (--seeds 2)"
    from scipy import stats

    def sd(a):
        return math.sqrt(max(float(a.var(ddof=1)), EPOCH_QUANTISATION_VAR))

    res = stats.ttest_ind_from_stats(
        t.mean(), sd(t), len(t), r.mean(), sd(r), len(r), equal_var=False, alternative="greater"
    )
    return float(res.pvalue), "Welch t-test, one-sided, variances >= 1/12"
