"""Reproduce a varguard failure: batchnorm.mode_switching on cuda-autocast-fp16.

# BNCase(shape=(4, 3, 4, 4), dtype='float16', distribution='normal', log10_kappa=2.0, log10_scale=0.0, seed=2, eps=1e-05, momentum=None, affine=True, track_running_stats=True, x_layout='contiguous', dy_layout='contiguous', grad_law='normal', steps=1, program=('train+backward', 'train+backward', 'train+backward', 'train+backward', 'train+backward', 'train+backward', 'train+backward', 'train+backward'
Run from a checkout with varguard installed:  python repro_batchnorm.mode_switching_cuda-autocast-fp16.py
"""

from verify.checks import get_check
from verify.resolve import resolve
from verify.strategies.batchnorm import BNCase  # noqa: F401

target = resolve('cuda-autocast-fp16')
case = BNCase(shape=(4, 3, 4, 4), dtype='float16', distribution='normal', log10_kappa=2.0, log10_scale=0.0, seed=2, eps=1e-05, momentum=None, affine=True, track_running_stats=True, x_layout='contiguous', dy_layout='contiguous', grad_law='normal', steps=1, program=('train+backward', 'train+backward', 'train+backward', 'train+backward', 'train+backward', 'train+backward', 'train+backward', 'train+backward', 'train+backward', 'train+backward', 'eval', 'eval+backward', 'train', 'eval'))
measurement = get_check('batchnorm.mode_switching').measure(target, case)
print(measurement.message)
raise SystemExit(0 if measurement.ok else 1)
