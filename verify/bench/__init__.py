"""`varguard bench`: speed next to correctness, and against the memory-bandwidth limit.

Every family with a benchmark is timed, for every target that passed verification, at sizes of
real networks, with pytest-benchmark (:mod:`verify.bench.bench_kernels`, run by
``pytest.main``): batch norm (forward in training and eval, backward, the residual tail
``relu(bn(x) + shortcut)``) at ResNet-50's layers; layer norm and RMSNorm (training forward,
backward) at transformer sizes (tokens, hidden); group norm at diffusion-UNet and ResNet-GN
sizes; the pre-norm tail (residual add + RMSNorm writing the stream, and its backward). For
each: the time, the bytes a kernel must move at the minimum (each input read once, each output
written once), the bandwidth that implies, its ratio to a plain copy (``y.copy_(x)``) of as many
bytes timed in the same run, the practical bandwidth limit, and its speed against the family's
reference target (its eager torch one).

- :mod:`verify.bench.families`: each family's operations, sizes and byte counts, declared once;
- :mod:`verify.bench.workloads`: the cases of a plan, and the callable each one times;
- :mod:`verify.bench.callables`: the callables, one per kind of operation;
- :mod:`verify.bench.verification`: which (target, operation) pairs passed the checks;
- :mod:`verify.bench.results`: bandwidth ratios, bench.md, and ``--compare`` against an old run;
- :mod:`verify.bench.section`: the benchmarks in the verification report;
- :mod:`verify.bench.command`: the ``varguard bench`` subcommand.
"""
