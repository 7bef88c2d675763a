"""verify.converge: a short convergence job passes a correct target and fails a mutant.

The job here is the real command on a small network ("tiny": ResNet-10, 4 residual blocks) and
768 digits for 3 epochs, so that it fits the CI budget; ``varguard converge`` itself trains the
full ResNet-50 by default (reports/converge-cpu holds such a run).
"""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest
import torch

from reference.data import digits
from verify.converge import checks
from verify.converge.command import main
from verify.converge.config import ConvergeConfig
from verify.converge.controls import Arm, reference_arm, target_arm
from verify.converge.train import Monitor, train_step
from verify.mutants.batchnorm import BackwardStatsConstant, NoEps
from verify.resolve import resolve

SHORT = [
    "--model", "tiny", "--train-limit", "768", "--epochs", "3", "--seeds", "2",
    "--threshold", "0.7", "--no-progress",
]  # fmt: skip


def run_command(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def short_job(tmp_path_factory):
    """One job: a correct target (op-by-op BatchNorm), a mutant, the reference, both controls."""
    out = tmp_path_factory.mktemp("converge")
    argv = [
        *SHORT,
        "--target", "varguard-explicit",
        "--target", "mutant:bn_backward_stats_constant",
        "--out", str(out),
    ]  # fmt: skip
    code, stdout, _ = run_command(argv)
    report = json.loads((out / "converge.json").read_text())
    return code, stdout, report, out


def arm(report: dict, name: str) -> dict:
    return next(a for a in report["arms"] if a["name"] == name)


@pytest.mark.slow
def test_correct_target_passes(short_job):
    _, _, report, _ = short_job
    explicit = arm(report, "varguard-explicit")
    assert explicit["status"] == "passed", explicit
    assert arm(report, "reference")["status"] == "passed"
    assert all(a >= 0.7 for a in explicit["final_acc"])
    assert explicit["comparison"]["status"] == "passed"


@pytest.mark.slow
def test_mutant_fails_and_the_exit_code_says_so(short_job):
    code, stdout, report, _ = short_job
    mutant = arm(report, "mutant:bn_backward_stats_constant")
    assert mutant["status"] == "failed"
    runs = [r for r in report["runs"] if r["arm"] == mutant["name"]]
    assert {c["check"] for r in runs for c in r["checks"] if c["status"] == "failed"} >= {
        "converge.final.accuracy"
    }
    # Never reaching the threshold enters the t-test censored at epochs + 1; with 2 seeds the
    # t-test alone lacks the power to call it (see test_ttest_semantics); final.accuracy does.
    assert mutant["comparison"]["extra"]["values"]["target"] == [4, 4]
    assert mutant["comparison"]["extra"]["values"]["p"] > 0
    assert code == 1
    assert "FAILED converge.final.accuracy on mutant:bn_backward_stats_constant" in stdout


@pytest.mark.slow
def test_report_has_runs_checks_curves_controls_and_plots(short_job):
    _, stdout, report, out = short_job
    assert report["schema"] == "varguard.converge/1"
    run = report["runs"][0]
    for key in ("arm", "seed", "epochs", "loss", "acc", "wall_s", "images_per_s", "checks"):
        assert key in run
    assert len(run["loss"]) == len(run["acc"]) == 3
    names = [c["check"].removeprefix("converge.") for c in run["checks"]]
    assert names == [
        "init.loss", "init.stream", "train.finite", "train.grad_norms", "final.accuracy"
    ]  # fmt: skip
    assert report["results"] and all(r["family"] == "converge" for r in report["results"])
    assert {c["status"] for c in run["checks"]} <= {"passed", "failed", "skipped"}
    assert {a["name"] for a in report["arms"] if a["role"] == "control"} == {"plain-10", "no-bn"}
    assert len(report["controls"]) == 2 and "plain-10: held-out accuracy" in stdout
    for png in ("loss.png", "accuracy.png", "test_loss.png", "stream.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "converge.txt").read_text().startswith("converge: tiny on digits")


@pytest.mark.slow
def test_initial_loss_is_ln_c_at_init(short_job):
    _, _, report, _ = short_job
    for run in report["runs"]:
        if run["role"] == "control":
            continue
        check = run["checks"][0]
        assert check["status"] == "passed", check["message"]
        tolerance = check["extra"]["values"]["tolerance"]
        assert abs(run["initial_loss"] - math.log(10)) <= tolerance


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--epochs", "0"], "--epochs=0"),
        (["--target", "no-such-target"], "--target='no-such-target'"),
        (["--target", "mutant:bn_nope"], "mutant='bn_nope'"),
        (["--target", "torch-selu"], "batchnorm target"),
        (["--target", "torch-fold-conv-bn"], "inference"),
        (["--threshold", "1.5"], "--threshold=1.5"),
        (["--controls", "plain,bogus"], "--controls='bogus'"),
        (["--train-limit", "10"], "--train-limit=10"),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv, needle):
    code, stdout, stderr = run_command(argv)
    assert code == 2
    assert needle in stderr and stderr.count("\n") == 1, stderr


def test_plan_shares_the_reference_and_maps_half_precision_to_autocast():
    assert target_arm(resolve("torch-eager")).shares_reference
    mutant = target_arm(resolve("mutant:bn_no_eps"))
    assert not mutant.shares_reference and mutant.norm_layer is NoEps
    half = target_arm(resolve("torch-float16"))
    assert half.autocast == "float16" and half.dtype == torch.float32
    cuda = target_arm(resolve("cuda-cudnn"))
    assert (cuda.unavailable is None) == torch.cuda.is_available()


def test_config_validates_fields():
    with pytest.raises(ValueError, match="seeds"):
        ConvergeConfig(seeds=0)
    with pytest.raises(ValueError, match="model"):
        ConvergeConfig(model="vgg")
    assert ConvergeConfig().model == "resnet50"  # the real network is the default


# --- the checks on their own ----------------------------------------------------------------


@pytest.fixture(scope="module")
def first_batch():
    data = digits(seed=0)
    x, y = data.train.tensors
    return x[:64], y[:64]


def build(norm_layer, seed: int = 0):
    torch.manual_seed(seed)
    return Arm("t", "target", norm_layer=norm_layer).build("tiny", 10).train()


def forward(model, x):
    return model(x)


def test_stream_check_passes_torch_batchnorm(first_batch):
    x, _ = first_batch
    result = checks.stream_check(build(torch.nn.BatchNorm2d), x, forward=forward, u=2.0**-24)
    assert result.status == "passed", result.message
    blocks = checks.values_of(result)["blocks"]
    assert len(blocks) == 4 and all(b["var_out"] == b["predicted"] for b in blocks)


def test_stream_check_catches_a_batchnorm_without_eps(first_batch):
    # The last stage is 1x1 in space: its batch variances are small, so eps = 1e-5 matters.
    x, _ = first_batch
    result = checks.stream_check(build(NoEps), x, forward=forward, u=2.0**-24)
    assert result.status == "failed"
    assert "Var(F)" in result.message


def _logits_at_init(features, num_classes=10, seed=0):
    torch.manual_seed(seed)
    fc = torch.nn.Linear(features.shape[1], num_classes)
    with torch.no_grad():
        return fc(features)


def test_initial_loss_check_derived_tolerance():
    torch.manual_seed(1)
    y = torch.arange(64) % 10
    f = torch.relu(torch.randn(64, 512))  # post-ReLU BN outputs: mean square 1/2
    ok = checks.initial_loss_check(f, _logits_at_init(f), y, num_classes=10, u=2.0**-24)
    assert ok.status == "passed", ok.message
    assert (
        checks.values_of(ok)["tolerance"] < 1.0
    )  # derived at alpha = 1e-6, not a blanket allowance
    # Features a BatchNorm cannot produce (mean square 25): the spread check fails.
    big = checks.initial_loss_check(5 * f, _logits_at_init(5 * f), y, num_classes=10, u=2.0**-24)
    assert big.status == "failed" and "BatchNorm bound" in big.message
    # Logits that already favour the true class are not an untrained network.
    leak = _logits_at_init(f) + 2.0 * torch.nn.functional.one_hot(y, 10)
    bad = checks.initial_loss_check(f, leak, y, num_classes=10, u=2.0**-24)
    assert bad.status == "failed"


def test_ttest_semantics():
    p_same, _ = checks.epochs_ttest([3, 3], [3, 3], alpha=0.01)
    assert p_same == pytest.approx(0.5)
    # Ties: each count is known to within its epoch (variance >= 1/12), so 2 seeds one epoch
    # apart are not yet evidence at 1%, 3 seeds are, and a larger gap is with 2.
    assert 0.01 < checks.epochs_ttest([4, 4], [3, 3], alpha=0.01)[0] < 0.05
    assert checks.epochs_ttest([4, 4, 4], [3, 3, 3], alpha=0.01)[0] < 0.01
    assert checks.epochs_ttest([6, 6], [3, 3], alpha=0.01)[0] < 0.01
    assert checks.epochs_ttest([2, 3], [3, 3], alpha=0.01)[0] > 0.5  # faster: no evidence
    assert checks.epochs_ttest([3], [3], alpha=0.01)[0] is None


def test_monitor_names_the_first_non_finite_output(first_batch):
    x, y = first_batch
    model = build(torch.nn.BatchNorm2d)
    list(model.blocks())[1].register_forward_hook(lambda m, i, o: o * float("nan"))
    monitor = Monitor(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=4)
    before = [p.detach().clone() for p in model.parameters()]
    _, problem = train_step(
        model, opt, sched, x, y, autocast=None, device=x.device, monitor=monitor, step=0
    )
    assert problem == "non-finite activations, first at block2"
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_monitor_grad_floor_skips_the_zero_init_start(first_batch):
    x, y = first_batch
    model = build(torch.nn.BatchNorm2d)
    monitor = Monitor(model, floor_from=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=4)
    train_step(model, opt, sched, x, y, autocast=None, device=x.device, monitor=monitor, step=0)
    # Step 0: every zero-init branch has exactly zero gradient -- not recorded as the floor.
    assert math.isinf(monitor.extremes()[0][1])
    train_step(model, opt, sched, x, y, autocast=None, device=x.device, monitor=monitor, step=1)
    assert 0.0 < monitor.extremes()[0][1] < math.inf


def test_mutant_breaks_backward_not_forward(first_batch):
    # Why bn_backward_stats_constant is the convergence mutant: at init everything matches.
    x, y = first_batch
    model = build(BackwardStatsConstant)
    result = checks.stream_check(model, x, forward=forward, u=2.0**-24)
    assert result.status == "passed"


def test_bench_measures_both_loops():
    from verify.converge.bench import bench_overhead
    from verify.converge.distributed import Runtime
    from verify.converge.train import load_data

    cfg = ConvergeConfig(model="tiny", train_limit=128, progress=False)
    result = bench_overhead(cfg, Runtime(torch.device("cpu")), load_data(cfg), steps=4, block=2)
    assert result["steps_each"] == 4 and result["ratio"] > 0
    assert "ratio" in result["message"]
    assert reference_arm().name == "reference"


def test_monitor_samples_gradients_and_diagnoses_a_bad_one(first_batch):
    x, y = first_batch
    model = build(torch.nn.BatchNorm2d)
    model.fc.weight.register_hook(lambda g: g * float("inf"))
    monitor = Monitor(model, grad_every=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=4)
    kw = dict(autocast=None, device=x.device, monitor=monitor)
    # Step 1 is not sampled: the bad gradient goes into the parameters, and step 2's logits
    # (or its sampled gradients) catch it; the diagnosis names the parameters.
    assert train_step(model, opt, sched, x, y, step=1, **kw)[1] is None
    _, problem = train_step(model, opt, sched, x, y, step=2, **kw)
    assert problem == "non-finite parameters in fc (a non-finite update before)"
