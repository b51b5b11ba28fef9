"""``python -m genrewiz``: the same CLI as the ``genrewiz`` console script."""

import sys

from .cli import main

sys.exit(main())
