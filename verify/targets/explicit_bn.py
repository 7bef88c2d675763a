"""A batch norm written out op by op in torch: correct, and the base every mutant edits.

Each step is its own method so a mutant overrides exactly one thing. As a target
(``varguard-explicit``) it must pass every check: that is the control showing a mutant fails
for its one bug and nothing else.
"""

from __future__ import annotations

import torch


class ExplicitBatchNorm2d(torch.nn.BatchNorm2d):
    """Drop-in for torch.nn.BatchNorm2d: two-pass statistics in float32 (float64 for float64)."""

    def _validate(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (N, C, H, W), got {x.dim()}D input")
        if x.shape[1] != self.num_features:
            raise ValueError(f"expected {self.num_features} channels, got {x.shape[1]}")
        if self.training and x.numel() // x.shape[1] < 2:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size "
                f"{tuple(x.shape)}"
            )

    @staticmethod
    def _acc_dtype(x: torch.Tensor) -> torch.dtype:
        return torch.float64 if x.dtype == torch.float64 else torch.float32

    def _stats(self, xa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch mean and biased variance per channel: two passes."""
        mean = xa.mean(dim=(0, 2, 3))
        var = ((xa - mean[None, :, None, None]) ** 2).mean(dim=(0, 2, 3))
        return mean, var

    def _normalize(self, xa, mean, var) -> torch.Tensor:
        return (xa - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps)

    def _factor(self) -> float:
        if self.momentum is None:
            return 1.0 / float(self.num_batches_tracked)
        return self.momentum

    def _update_running(self, mean, var, m: int) -> None:
        f = self._factor()
        with torch.no_grad():
            self.running_mean.mul_(1 - f).add_(f * mean.to(self.running_mean.dtype))
            unbiased = var * (m / (m - 1))
            self.running_var.mul_(1 - f).add_(f * unbiased.to(self.running_var.dtype))

    def _use_batch_stats(self) -> bool:
        return self.training or not self.track_running_stats

    def _affine(self, xhat: torch.Tensor) -> torch.Tensor:
        if not self.affine:
            return xhat
        return xhat * self.weight[None, :, None, None] + self.bias[None, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._validate(x)
        xa = x.to(self._acc_dtype(x))
        if self._use_batch_stats():
            mean, var = self._stats(xa)
            if self.training and self.track_running_stats:
                self.num_batches_tracked.add_(1)
                self._update_running(mean.detach(), var.detach(), x.numel() // x.shape[1])
        else:
            mean, var = self.running_mean.to(xa.dtype), self.running_var.to(xa.dtype)
        return self._affine(self._normalize(xa, mean, var)).to(x.dtype)
