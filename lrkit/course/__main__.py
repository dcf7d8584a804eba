"""``python -m lrkit.course``: see :mod:`lrkit.course.cli`."""

import sys

from .cli import main

sys.exit(main())
