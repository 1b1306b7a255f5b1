"""Client-supplied regular expressions, compiled by RE2 (google-re2).

A pattern a client sends (a metric label filter, a span attribute filter) is matched against stored
text inside a read. Python's `re` backtracks: `(a+)+$` against a long label can take minutes and hold a
reader thread. RE2 matches in time linear in the text (it has no backreferences or look-arounds, and
rejects them), which is why PostHog's ClickHouse uses it for the same filters. Matching is a search
anywhere in the text (`re.search` semantics); anchor with `^`/`$` for a whole-value match.
"""

from __future__ import annotations

from functools import lru_cache

import re2

MAX_PATTERN = 1000  # characters; longer patterns are refused before RE2 sees them
_MAX_MEM = 8 << 20  # bytes RE2 may use for one compiled program; a larger pattern is refused


class RegexError(ValueError):
    """A pattern RE2 cannot compile; the message says why (dialects turn it into a 400 naming the field)."""

    def __init__(self, pattern: str, reason: str) -> None:
        super().__init__(f"invalid regex {pattern!r}: {reason}")
        self.pattern, self.reason = pattern, reason


def _options() -> "re2.Options":
    options = re2.Options()
    options.log_errors = False  # RE2 would print every rejected pattern on stderr
    options.max_mem = _MAX_MEM
    return options


_OPTIONS = _options()


@lru_cache(maxsize=512)
def compile_regex(pattern: str) -> "re2._Regexp":
    """The compiled pattern (cached), or RegexError."""
    if not isinstance(pattern, str):
        raise RegexError(repr(pattern), "a pattern must be a string")
    if len(pattern) > MAX_PATTERN:
        raise RegexError(pattern[:40] + "…", f"longer than {MAX_PATTERN} characters")
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as e:
        reason = e.args[0] if e.args else "not a valid RE2 pattern"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise RegexError(pattern, str(reason)) from None

