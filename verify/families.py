"""The families of checks. Kept free of torch so the command line starts fast."""

FAMILIES = ("batchnorm", "init", "selu", "residual")
