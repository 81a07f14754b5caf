"""``python -m kvstore``: the command line (see `kvstore.cli`)."""

from __future__ import annotations

import sys

from kvstore.cli import main

if __name__ == "__main__":
    sys.exit(main())
