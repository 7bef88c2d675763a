"""`varguard bench`: speed next to correctness, and against the memory-bandwidth limit.

Batch norm (forward in training and eval, backward in training) and the residual tail
(``relu(bn(x) + shortcut)``) are timed for every target that passed verification, at sizes of
ResNet-50's layers, with pytest-benchmark (:mod:`verify.bench.bench_kernels`, run by
``pytest.main``). For each: the time, the bytes a kernel must move at the minimum (each input read
once, each output written once), the bandwidth that implies, and its ratio to a plain copy
(``y.copy_(x)``) of as many bytes timed in the same run, the practical bandwidth limit.

- :mod:`verify.bench.workloads`: sizes, operations, minimum bytes, the callables timed;
- :mod:`verify.bench.verification`: which (target, operation) pairs passed the checks;
- :mod:`verify.bench.results`: bandwidth ratios, bench.md, and ``--compare`` against an old run;
- :mod:`verify.bench.command`: the ``varguard bench`` subcommand.
"""
