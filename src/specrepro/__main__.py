"""`python -m specrepro`: how the workflow's jobs call the project (with the interpreter that runs
them, whether or not its scripts folder is on PATH)."""

import sys

from specrepro.cli import main

sys.exit(main())
