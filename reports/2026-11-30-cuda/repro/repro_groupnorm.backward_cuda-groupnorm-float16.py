"""Reproduce a varguard failure: groupnorm.backward on cuda-groupnorm-float16.

# GNCase(shape=(2, 1), num_groups=1, dtype='float16', param_dtype='float16', distribution='constant', log10_kappa=0.0, log10_scale=0.0, seed=0, eps=1e-08, affine=True, x_layout='contiguous', dy_layout='contiguous')
Run from a checkout with varguard installed:  python repro_groupnorm.backward_cuda-groupnorm-float16.py
"""

from verify.checks import get_check
from verify.resolve import resolve
from verify.strategies.groupnorm import GNCase  # noqa: F401

target = resolve('cuda-groupnorm-float16')
case = GNCase(shape=(2, 1), num_groups=1, dtype='float16', param_dtype='float16', distribution='constant', log10_kappa=0.0, log10_scale=0.0, seed=0, eps=1e-08, affine=True, x_layout='contiguous', dy_layout='contiguous')
measurement = get_check('groupnorm.backward').measure(target, case)
print(measurement.message)
raise SystemExit(0 if measurement.ok else 1)
