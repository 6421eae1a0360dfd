"""``python -m k3snb`` is the ``k3snb`` command."""

import sys

from .cli import main

sys.exit(main())
