"""``python -m qsense`` is the ``qsense`` command."""

import sys

from .cli import main

sys.exit(main())
