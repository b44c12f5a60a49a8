"""``python -m qsense`` is the ``qsense`` command."""

import sys

from qsense.apps.cli import main

sys.exit(main())
