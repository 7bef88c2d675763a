"""``varguard converge``: train the full reference ResNet-50 with a target's BatchNorm.

Checks the theory at init (initial loss ln C, the residual stream's variance), watches training
(finite values, gradient norms in range) and compares the target's convergence with the reference
BatchNorm's over the same seeds (one-sided t-test), next to two controls (no skips, no BN).
See DESIGN.md, "ResNet-50 convergence".
"""
