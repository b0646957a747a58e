"""``python -m segbench.cli``: the same command line as ``segbench``."""

import sys

from segbench.cli import main

sys.exit(main())
