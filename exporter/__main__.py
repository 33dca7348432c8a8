"""``python -m exporter``: the same as ``pipetrack exporter``, with the same flags."""

from __future__ import annotations

import sys

from exporter._cli import main

if __name__ == "__main__":
    sys.exit(main())
