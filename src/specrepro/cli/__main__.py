"""`python -m specrepro.cli`, as the module ran before it became a package."""

import sys

from specrepro.cli import main

sys.exit(main())
