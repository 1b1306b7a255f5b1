"""`otelite` and `python -m otelite.collector.cli`: the command line (its commands are in commands.py).

Kept this small on purpose: the decode workers are spawned processes (collector/pipeline/walker.py), and a
spawned process imports its parent's main module again; this is that module, so whatever it imported at
the top every worker would import too (the config machinery, the store, numpy: ~25 MB of RSS each).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from otelite.collector.commands import main as run
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
