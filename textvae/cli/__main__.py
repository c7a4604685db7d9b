"""`python -m textvae.cli`: the `textvae` command."""

import sys

from . import main

sys.exit(main())
