"""``python -m spt``: the same command line as ``spt``."""

import sys

from spt.cli import main

sys.exit(main())
