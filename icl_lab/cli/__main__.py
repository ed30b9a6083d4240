"""`python -m icl_lab.cli ...` runs the command line."""

import sys

from icl_lab.cli import main

sys.exit(main())
