"""Reproduce a varguard failure: batchnorm.layout on cuda-autocast-fp16.

# BNCase(shape=(4, 3, 5, 6), dtype='float16', distribution='normal', log10_kappa=0.0, log10_scale=0.0, seed=9, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True, x_layout='offset', dy_layout='contiguous', grad_law='normal', steps=1, program=())
Run from a checkout with varguard installed:  python repro_batchnorm.layout_cuda-autocast-fp16.py
"""

from verify.checks import get_check
from verify.resolve import resolve
from verify.strategies.batchnorm import BNCase  # noqa: F401

target = resolve('cuda-autocast-fp16')
case = BNCase(shape=(4, 3, 5, 6), dtype='float16', distribution='normal', log10_kappa=0.0, log10_scale=0.0, seed=9, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True, x_layout='offset', dy_layout='contiguous', grad_law='normal', steps=1, program=())
measurement = get_check('batchnorm.layout').measure(target, case)
print(measurement.message)
raise SystemExit(0 if measurement.ok else 1)
