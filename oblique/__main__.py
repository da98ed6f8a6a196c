"""``python -m oblique`` is the ``oblique`` command."""

import sys

from oblique.cli import main

sys.exit(main())
