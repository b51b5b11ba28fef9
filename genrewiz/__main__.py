"""``python -m genrewiz``: the same CLI as the ``genrewiz`` console script."""

import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while the command is still starting: one line, as later, and no traceback
    print("genrewiz: interrupted; the results so far were written", file=sys.stderr)
    sys.exit(128 + 2)

sys.exit(main())
