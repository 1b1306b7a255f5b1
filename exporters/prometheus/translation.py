"""OpenTelemetry names, units and attributes → Prometheus names and labels (prometheus.md, "Translation").

Pure functions, no I/O. They follow the OpenTelemetry "Prometheus and OpenMetrics compatibility"
specification as the Collector's translator implements it:

    >>> metric_name("http.server.duration", "ms")
    'http_server_duration_milliseconds'
    >>> metric_name("requests", "{request}", counter=True)
    'requests_total'
    >>> metric_name("memory.utilization", "1", gauge=True)
    'memory_utilization_ratio'
    >>> label_pairs({"http.method": "GET", "http_method": "POST"})
    [('http_method', 'GET;POST')]
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

from otelite.collector.normalize.otlp import label_text  # the same text the store's label rows hold

# UCUM → Prometheus unit words (the Collector's table). Units not listed are used as written, sanitized.
UNITS = {
    # time
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds", "us": "microseconds",
    "ns": "nanoseconds",
    # bytes
    "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes", "GiBy": "gibibytes", "TiBy": "tibibytes",
    "KBy": "kilobytes", "MBy": "megabytes", "GBy": "gigabytes", "TBy": "terabytes",
    "B": "bytes", "KB": "kilobytes", "MB": "megabytes", "GB": "gigabytes", "TB": "terabytes",
    # SI
    "m": "meters", "V": "volts", "A": "amperes", "J": "joules", "W": "watts", "g": "grams",
    # misc
    "Cel": "celsius", "Hz": "hertz", "%": "percent",
}
# The unit after `/`, in the singular: `m/s` → `meters_per_second`.
PER_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}

# Labels otelite itself sets on a sample; a point attribute that maps onto one is exposed as
# `exported_<name>`, as Prometheus does with `honor_labels: false` for job/instance.
SCOPE_NAME = "otel_scope_name"
SCOPE_VERSION = "otel_scope_version"
_RESERVED_ALWAYS = frozenset(("job", "instance", SCOPE_NAME, SCOPE_VERSION))
# The resource attributes that become job and instance instead of target_info labels.
IDENTIFYING_RESOURCE_ATTRIBUTES = frozenset(("service.name", "service.namespace", "service.instance.id"))

_INVALID_NAME = re.compile(r"[^a-zA-Z0-9_:]")
_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9_]")
_UNDERSCORES = re.compile(r"__+")
_ANNOTATION = re.compile(r"\{[^}]*\}")
_NON_ALNUM = re.compile(r"[^a-zA-Z0-9]")


def sanitize_name(name: str) -> str:
    """Characters outside `[a-zA-Z0-9_:]` → `_`, runs of `_` collapsed, leading and trailing `_` dropped
    (as the Collector does), and `_` before a leading digit."""
    s = _UNDERSCORES.sub("_", _INVALID_NAME.sub("_", name)).strip("_")
    if not s:
        return "_"
    return "_" + s if s[0].isdigit() else s


def unit_words(unit: str, *, gauge: bool = False) -> tuple[str, str]:
    """A UCUM unit → (main word, per word), e.g. `m/s` → ('meters', 'second'), `{packet}` → ('', '').

    Annotations in braces are dropped; `1` is `ratio` for gauges only (and nothing otherwise); a unit not
    in the table is kept with its non-alphanumeric characters removed.
    """
    u = _ANNOTATION.sub("", unit or "").strip()
    if not u:
        return "", ""
    if u == "1":
        return ("ratio" if gauge else ""), ""
    main, slash, per = u.partition("/")
    main_w = "" if main == "1" else UNITS.get(main, _NON_ALNUM.sub("", main))
    per_w = PER_UNITS.get(per, _NON_ALNUM.sub("", per)) if slash else ""
    return main_w, per_w


def metric_name(name: str, unit: str = "", *, counter: bool = False, gauge: bool = False) -> str:
    """The Prometheus name of a metric (what text format 0.0.4 shows; counters end with `_total`).

    `counter`: a monotonic sum (gets `_total`, after the unit). `gauge`: an OpenTelemetry Gauge (unit `1`
    becomes `_ratio`). A unit already at the end of the name is not repeated.
    """
    base = sanitize_name(name)
    if counter:
        while base.endswith("_total") and base != "_total":
            base = base[:-len("_total")]
    main, per = unit_words(unit, gauge=gauge)
    full = "_".join(w for w in (main, "per" if per else "", per) if w)
    if full and not _ends_with_word(base, full):
        if main and _ends_with_word(base, main) and per:
            base = f"{base}_per_{per}"
        else:
            base = f"{base}_{full}"
    base = _UNDERSCORES.sub("_", base)
    if counter:
        base += "_total"
    return "_" + base if base[0].isdigit() else base


def tally_name(key: str) -> str:
    """A Trifle key's family name (prometheus.md: one family per key, the dot path as the `path` label).
    Colons go too: Trifle keys use them as separators (`event::signup` → `event_signup`), while in
    Prometheus they are reserved for recording rules (promtool rejects them in exposed names)."""
    return sanitize_name(key.replace(":", "_"))


def tally_help(key: str) -> str:
    return f"Trifle key {key}: per path, every track added and each assert replacing the total"


def family_unit(name: str, unit: str, *, gauge: bool = False) -> str:
    """The OpenMetrics `# UNIT` of a family named `name` (without `_total`), or '' when the name does not
    end with it (OpenMetrics requires the family name to end with `_<unit>`)."""
    main, per = unit_words(unit, gauge=gauge)
    full = "_".join(w for w in (main, "per" if per else "", per) if w)
    return full if full and name.endswith("_" + full) else ""


def _ends_with_word(name: str, word: str) -> bool:
    return name == word or name.endswith("_" + word)


def label_name(key: str) -> str:
    """An attribute key → a label name: `[a-zA-Z_][a-zA-Z0-9_]*`; a leading digit gets `key_`, and a
    leading `__` (reserved for Prometheus' internal labels such as `__name__`) gets `key`."""
    s = _INVALID_LABEL.sub("_", key)
    if not s:
        return "key_"
    if s[0].isdigit():
        return "key_" + s
    if s.startswith("__"):
        return "key" + s
    return s


def label_pairs(attributes: Mapping[str, Any], reserved: Iterable[str] = ()) -> list[tuple[str, str]]:
    """Attributes → sorted (label, value) pairs. Keys that map to one label have their values joined with
    `;` in the order of the original keys; a label in `reserved` becomes `exported_<label>`."""
    reserved = frozenset(reserved)
    out: dict[str, str] = {}
    for key in sorted(attributes):
        name = label_name(key)
        if name in reserved:
            name = "exported_" + name
        text = label_text(attributes[key])
        out[name] = f"{out[name]};{text}" if name in out else text
    return sorted(out.items())


def reserved_labels(prom_type: str) -> frozenset[str]:
    """Labels a point attribute may not take for a family of `prom_type`."""
    if prom_type == "histogram":
        return _RESERVED_ALWAYS | {"le"}
    if prom_type == "summary":
        return _RESERVED_ALWAYS | {"quantile"}
    return _RESERVED_ALWAYS


def job_instance(resource: Mapping[str, Any]) -> list[tuple[str, str]]:
    """`job` = `service.namespace/service.name` (or `service.name`), `instance` = `service.instance.id`."""
    out = []
    name = resource.get("service.name")
    if name is not None:
        ns = resource.get("service.namespace")
        job = label_text(name)
        out.append(("job", f"{label_text(ns)}/{job}" if ns is not None and ns != "" else job))
    instance = resource.get("service.instance.id")
    if instance is not None:
        out.append(("instance", label_text(instance)))
    return out


def target_info_labels(resource: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Labels of the resource's `target_info` sample: job/instance plus every other resource attribute."""
    others = {k: v for k, v in resource.items() if k not in IDENTIFYING_RESOURCE_ATTRIBUTES}
    return sorted(job_instance(resource) + label_pairs(others, ("job", "instance")))


def escape_label_value(value: str) -> str:
    """Backslash, double quote and newline escaped, as both text formats require."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def render_labels(pairs: Iterable[tuple[str, str]]) -> str:
    """Pairs → `a="1",b="2"` (no braces), the form exposition.py splices into each sample line."""
    return ",".join(f'{k}="{escape_label_value(v)}"' for k, v in pairs)
