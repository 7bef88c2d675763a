"""`python -m verify` is the same as the `varguard` console script."""

import sys

from verify.cli import main

sys.exit(main())
