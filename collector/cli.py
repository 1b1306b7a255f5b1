"""`otelite` and `python -m otelite.collector.cli`: the command line (its commands are in commands.py).

Kept this small on purpose: the decode workers are spawned processes (collector/pipeline/walker.py), and a
spawned process imports its parent's main module again; this is that module, so whatever it imported at
the top every worker would import too (the config machinery, the store, numpy: ~25 MB of RSS each).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    if argv is None and _command(sys.argv[1:]) == "serve":  # this process's own command line
        from otelite.collector.malloc import exec_with_huge_pages
        exec_with_huge_pages()  # before otelite is imported (collector/malloc.py)
    from otelite.collector.commands import main as run
    return run(argv)


def _command(args: list[str]) -> str | None:
    """The command a command line names: its first word that is neither an option nor the value of
    `--log-level` (commands.build_parser's one option before the command)."""
    words = iter(args)
    for word in words:
        if word == "--log-level":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


if __name__ == "__main__":
    sys.exit(main())
