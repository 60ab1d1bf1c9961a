"""`python -m kvgroomd` runs the command line."""

import sys

from kvgroomd.cli import main

sys.exit(main())
