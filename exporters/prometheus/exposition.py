"""Prometheus text format 0.0.4 and OpenMetrics 1.0.0, rendered by hand from metric families.

`generate_latest(families, openmetrics)` is pure: it formats what it is given and decides only what the
format itself dictates (names per format, which samples OpenMetrics forbids). Labels arrive pre-rendered
(`a="1",b="2"`, see translation.render_labels), so a scrape of an unchanged series set spends its time on
values only.

    >>> fam = Family("requests", COUNTER, "Requests served.", samples=[('code="200"', 3, None)])
    >>> generate_latest([fam]).decode()
    '# HELP requests_total Requests served.\\n# TYPE requests_total counter\\nrequests_total{code="200"} 3\\n'

Sample shapes (tuples, for speed), by family type:
- counter, gauge, info: `(labels, value, exemplar | None)`
- histogram: `(labels, les, cumulative, count, sum | None, exemplars | None)`: `le` texts and cumulative
  counts of the finite buckets (`+Inf` is `count`), exemplars by bucket index (`len(les)` for `+Inf`)
- summary: `(labels, [(quantile_text, value), ...], count, sum | None)`
An exemplar is `(labels, value, timestamp_ns | None)`; only OpenMetrics shows them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

CONTENT_TYPE_TEXT = "text/plain; version=0.0.4; charset=utf-8"
CONTENT_TYPE_OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

COUNTER = "counter"
GAUGE = "gauge"
HISTOGRAM = "histogram"
SUMMARY = "summary"
INFO = "info"

_INF = float("inf")


@dataclass(slots=True)
class Family:
    """One metric family. `name` is the OpenMetrics family name: counters without `_total`, info without
    `_info` (text format 0.0.4 shows `name_total` / `name_info` as the family name)."""

    name: str
    type: str
    help: str = ""
    unit: str = ""  # OpenMetrics `# UNIT`; only set when `name` ends with `_<unit>`
    samples: list = field(default_factory=list)


def format_value(v: Any) -> str:
    """A sample value as Go's strconv formats it for Prometheus: `+Inf`, `-Inf`, `NaN`, ints exact."""
    if type(v) is int:
        return str(v)
    if v != v:
        return "NaN"
    if v == _INF:
        return "+Inf"
    if v == -_INF:
        return "-Inf"
    return repr(v)


def float_label(d: float) -> str:
    """A `le` / `quantile` label value in the canonical form OpenMetrics requires (`1.0`, `+Inf`, `1e+06`)."""
    d = float(d)
    if d == _INF:
        return "+Inf"
    if d == -_INF:
        return "-Inf"
    if d != d:
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    # Go switches to exponent notation sooner than Python (prometheus_client.utils.floatToGoString).
    if d > 0 and dot > 6:
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def _help_text(text: str, openmetrics: bool) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if openmetrics else text


def _timestamp(ns: int) -> str:
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


def _exemplar(ex: Any) -> str:
    labels, value, ts = ex
    if ts is None:
        return f" # {{{labels}}} {format_value(value)}"
    return f" # {{{labels}}} {format_value(value)} {_timestamp(ts)}"


def generate_latest(families: Iterable[Family], openmetrics: bool = False, memo: dict | None = None) -> bytes:
    """Render `families` in text format 0.0.4, or OpenMetrics 1.0.0 (ending with `# EOF`).

    `memo`, a dict the caller keeps between calls for one format, remembers the text of each histogram
    and summary sample: a sample that is the very same object as last time (an unchanged series, see
    collect.py) is not formatted again. Samples must not be mutated once rendered.
    """
    out: list[str] = []
    ap = out.append
    fmt = format_value
    for f in families:
        name, typ = f.name, f.type
        if typ == COUNTER:
            shown = name if openmetrics else name + "_total"
        elif typ == INFO:
            shown = name if openmetrics else name + "_info"
        else:
            shown = name
        if f.help:
            ap(f"# HELP {shown} {_help_text(f.help, openmetrics)}\n")
        ap(f"# TYPE {shown} {typ if openmetrics or typ != INFO else GAUGE}\n")
        if openmetrics and f.unit:
            ap(f"# UNIT {shown} {f.unit}\n")
        if typ == GAUGE:
            for labels, value, _ in f.samples:
                ap(f"{name}{{{labels}}} {fmt(value)}\n" if labels else f"{name} {fmt(value)}\n")
        elif typ == COUNTER:
            sname = name + "_total"
            for labels, value, ex in f.samples:
                line = f"{sname}{{{labels}}} {fmt(value)}" if labels else f"{sname} {fmt(value)}"
                if not openmetrics:
                    ap(line + "\n")
                elif value == value and value >= 0:
                    # OpenMetrics: counter values are never negative or NaN; such a sample is left out.
                    ap(f"{line}{_exemplar(ex)}\n" if ex is not None else line + "\n")
        elif typ == HISTOGRAM or typ == SUMMARY:
            render = _histogram if typ == HISTOGRAM else _summary
            if memo is None:
                for sample in f.samples:
                    ap(render(name, sample, openmetrics))
                continue
            get = memo.get
            for sample in f.samples:
                hit = get(id(sample))
                if hit is not None and hit[0] is sample:  # the entry keeps `sample` alive: ids are unique
                    ap(hit[1])
                else:
                    text = render(name, sample, openmetrics)
                    memo[id(sample)] = (sample, text)
                    ap(text)
        elif typ == INFO:
            sname = name + "_info"
            for labels, value, _ in f.samples:
                ap(f"{sname}{{{labels}}} {fmt(value)}\n" if labels else f"{sname} {fmt(value)}\n")
    if openmetrics:
        ap("# EOF\n")
    return "".join(out).encode("utf-8")


def _histogram(name: str, sample: tuple, openmetrics: bool) -> str:
    labels, les, cumulative, count, total, exemplars = sample
    prefix = f'{name}_bucket{{{labels},le="' if labels else f'{name}_bucket{{le="'
    suffix = f"{{{labels}}}" if labels else ""
    if openmetrics and exemplars:
        lines = []
        for i, (le, c) in enumerate(zip(les, cumulative)):
            ex = exemplars.get(i)
            lines.append(f'{prefix}{le}"}} {c}{_exemplar(ex)}\n' if ex else f'{prefix}{le}"}} {c}\n')
        ex = exemplars.get(len(les))
        lines.append(f'{prefix}+Inf"}} {count}{_exemplar(ex)}\n' if ex else f'{prefix}+Inf"}} {count}\n')
    else:
        lines = [f'{prefix}{le}"}} {c}\n' for le, c in zip(les, cumulative)]
        lines.append(f'{prefix}+Inf"}} {count}\n')
    if not openmetrics:
        if total is not None:
            lines.append(f"{name}_sum{suffix} {format_value(total)}\n")
        lines.append(f"{name}_count{suffix} {count}\n")
    # OpenMetrics: _sum and _count come together, and only when the sum is a counter (known, not negative,
    # no bucket below zero).
    elif total is not None and total == total and total >= 0 and not (les and les[0][0] == "-"):
        lines.append(f"{name}_sum{suffix} {format_value(total)}\n{name}_count{suffix} {count}\n")
    return "".join(lines)


def _summary(name: str, sample: tuple, openmetrics: bool) -> str:
    labels, quantiles, count, total = sample
    lp = labels + "," if labels else ""
    suffix = f"{{{labels}}}" if labels else ""
    lines = [f'{name}{{{lp}quantile="{q}"}} {format_value(v)}\n' for q, v in quantiles
             if not (openmetrics and v < 0)]  # OpenMetrics: quantile values are never negative
    if total is not None and not (openmetrics and (total != total or total < 0)):
        lines.append(f"{name}_sum{suffix} {format_value(total)}\n")
    lines.append(f"{name}_count{suffix} {count}\n")
    return "".join(lines)
