"""Loading configuration in the OpenTelemetry Collector's shape.

Loading follows the Collector's confmap habit: build the default config in code, overlay the YAML file
section by section, then `validate()`: each component's own rules, then the rules that span components
(pipelines, listeners, auth). Every error names the offending key (as a dotted path) and the file, so a
typo stops the process with a message a person can act on.

This module knows no component's fields: each component type registers its config class (defaults and
`validate()`) with a `Factory` (collector/component.py), and the registry of the types otelite is built
with is `collector/components.py` (the ``otlp`` receiver, the ``batch`` and ``memory_limiter``
processors, the ``sqlite`` and ``prometheus`` exporters). How a field is read from YAML (a duration, an
optional section, ...) is said by its field metadata, never by its name. A Collector config that uses
only these components loads unchanged (component ids may carry a ``/name`` suffix, ``${env:VAR}`` is
expanded).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from otelite.collector.component import (KINDS, SIGNALS, InvalidField, Registry, byte_size, component_type,
                                         duration, is_loopback, mapping_of, parse_endpoint, parse_size)
from otelite.collector.components import BUILTIN, DEFAULT_COMPONENTS
from otelite.collector.times import parse_duration

if TYPE_CHECKING:
    from otelite.collector.pipeline.batch import BatchProcessorConfig
    from otelite.collector.pipeline.memory_limiter import MemoryLimiterConfig
    from otelite.collector.receivers.otlp.config import OtlpReceiverConfig
    from otelite.exporters.prometheus.config import PrometheusExporterConfig
    from otelite.exporters.sqlite.config import SqliteExporterConfig


class ConfigError(ValueError):
    """An invalid configuration: the message names the key and the file."""


# --- otelite's own sections: auth, api and service ------------------------------------------------------------
# Each field's comment says what happens when it is omitted.

@dataclass
class RateLimitConfig:
    requests: int = 60  # tokens refilled per `per`
    per: float = duration(60.0)
    burst: int = 0  # bucket size; 0: `requests`
    enabled: bool = True  # false: the class is unlimited (turns off a default a dialect declares)


@dataclass
class AuthConfig:
    # "required": every REST route needs an API key. "none": local development only, refused unless
    # every listener is on loopback (auth.md).
    mode: str = "required"
    # Token buckets per API key and route class (e.g. `read`, `flux_batch`). A class not listed is unlimited,
    # unless a dialect declares a default for it (Flux: flux_batch 10/min, flux_query 60/min); a class
    # listed here replaces that default whole, and `enabled: false` turns it off.
    rate_limits: dict[str, RateLimitConfig] = mapping_of(RateLimitConfig)


@dataclass
class ApiConfig:
    """Limits every REST dialect gets from the shared machinery (api/body.py, Store.read), so a careless
    or hostile client cannot exhaust memory or stall ingest and health (issue 10)."""

    # Largest request body of any REST route, after decompression; 413 above it, refused from
    # Content-Length before reading. OTLP/HTTP has its own (receivers.otlp.protocols.http).
    max_request_body_size: int = byte_size(1 << 20)
    # Time budget of one read (waiting for a query worker included); over it the statement is interrupted
    # and the answer is 503 with Retry-After in the dialect's error shape.
    query_timeout: float = duration(5.0)
    # Reads that run at once, on their own threads (health and OTLP never wait for them); more wait,
    # within query_timeout, and beyond 8 waiting per worker are refused at once with 503.
    query_workers: int = 4


@dataclass
class PipelineConfig:
    receivers: list[str] = field(default_factory=lambda: ["otlp"])
    processors: list[str] = field(default_factory=lambda: ["memory_limiter", "batch"])
    exporters: list[str] = field(default_factory=lambda: ["sqlite"])


@dataclass
class ServiceConfig:
    pipelines: dict[str, PipelineConfig] = field(
        default_factory=lambda: {"traces": PipelineConfig(), "metrics": PipelineConfig()})
    extensions: list[str] = field(default_factory=list)  # accepted for Collector compatibility; must be empty
    telemetry: dict[str, Any] = field(default_factory=dict)  # accepted, ignored: see /metrics/self


def _default_components(kind: str) -> dict[str, Any]:
    return {t: BUILTIN.get(kind, t).config() for t in DEFAULT_COMPONENTS[kind]}


@dataclass
class Config:
    receivers: dict[str, Any] = field(default_factory=lambda: _default_components("receivers"))
    processors: dict[str, Any] = field(default_factory=lambda: _default_components("processors"))
    exporters: dict[str, Any] = field(default_factory=lambda: _default_components("exporters"))
    service: ServiceConfig = field(default_factory=ServiceConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)  # otelite's own section (not a Collector one)
    api: ApiConfig = field(default_factory=ApiConfig)  # otelite's own: REST body and query limits
    source: str = "<defaults>"  # the file the config came from, for messages
    registry: Registry = field(default=BUILTIN, repr=False, compare=False)  # component type → factory

    # -- resolved views: the one component of each type the service runs ----------------------------
    @property
    def otlp(self) -> "OtlpReceiverConfig":
        return self.component("receivers", "otlp")

    @property
    def batch(self) -> "BatchProcessorConfig":
        return self.component("processors", "batch")

    @property
    def memory_limiter(self) -> "MemoryLimiterConfig":
        return self.component("processors", "memory_limiter")

    @property
    def sqlite(self) -> "SqliteExporterConfig":
        return self.component("exporters", "sqlite")

    @property
    def prometheus(self) -> "PrometheusExporterConfig":
        return self.component("exporters", "prometheus")

    def component(self, kind: str, type_: str) -> Any:
        """The config of the `type_` component a pipeline uses (else the first configured, else defaults)."""
        section: dict[str, Any] = getattr(self, kind)
        used = {name for p in self.service.pipelines.values()
                for name in (p.receivers + p.processors + p.exporters)}
        for name, comp in section.items():
            if component_type(name) == type_ and name in used:
                return comp
        for name, comp in section.items():
            if component_type(name) == type_:
                return comp
        # Not configured at all: the defaults apply (memory_limiter's default is off).
        return self.registry.get(kind, type_).config()

    def validate(self) -> None:
        """Each component's `validate()`, then the rules that span components (the Collector's
        `Validate()`); raises ConfigError naming the key."""
        self._validate_pipelines()
        if self.service.extensions:
            self._fail("service.extensions", "otelite has no extensions; remove them")
        if len(self.receivers) > 1:
            self._fail("receivers", f"otelite runs one otlp receiver; got {', '.join(self.receivers)}")
        for kind in KINDS:
            for name, comp in getattr(self, kind).items():
                validate = getattr(comp, "validate", None)
                if validate is None:
                    continue
                try:
                    validate()
                except InvalidField as e:
                    self._fail(f"{kind}.{name}.{e.key}", e.message)
        if self.auth.mode not in ("none", "required"):
            self._fail("auth.mode", f"must be required or none, got {self.auth.mode!r}")
        for cls, limit in self.auth.rate_limits.items():
            if limit.enabled and (limit.requests <= 0 or limit.per <= 0 or limit.burst < 0):
                self._fail(f"auth.rate_limits.{cls}", "requests and per must be positive, burst not negative")
        if self.api.max_request_body_size <= 0:
            self._fail("api.max_request_body_size", "must be positive")
        if self.api.query_timeout <= 0:
            self._fail("api.query_timeout", "must be positive")
        if not 1 <= self.api.query_workers <= 64:
            self._fail("api.query_workers", f"must be 1 to 64, got {self.api.query_workers}")
        if self.auth.mode == "none":
            for key, endpoint in self.listeners():
                if not is_loopback(parse_endpoint(endpoint)[0]):
                    self._fail("auth.mode", f"'none' is only allowed when every listener is on loopback, "
                                            f"but {key} is {endpoint}")

    def _validate_pipelines(self) -> None:
        if not self.service.pipelines:
            self._fail("service.pipelines", "at least one pipeline (traces or metrics) is required")
        stores: dict[str, str] = {}  # acknowledging exporter id → the first pipeline using it
        for pname, p in self.service.pipelines.items():
            signal = component_type(pname)
            for kind, names in (("receivers", p.receivers), ("processors", p.processors),
                                ("exporters", p.exporters)):
                for n in names:
                    if n not in getattr(self, kind):
                        self._fail(f"service.pipelines.{pname}.{kind}",
                                   f"references {n!r}, which is not configured under {kind}")
            if not p.receivers:
                self._fail(f"service.pipelines.{pname}.receivers", "must list at least one receiver")
            acknowledging = []
            for n in p.exporters:
                factory = self.registry.get("exporters", component_type(n))
                if signal not in factory.signals:
                    self._fail(f"service.pipelines.{pname}.exporters",
                               f"the {factory.type} exporter does not support {signal}")
                if factory.acknowledges:
                    acknowledging.append(n)
                    stores.setdefault(n, pname)
            if not acknowledging:
                types = [t for t in self.registry.types("exporters")
                         if self.registry.get("exporters", t).acknowledges]
                self._fail(f"service.pipelines.{pname}.exporters", f"must include the {' or '.join(types)} exporter")
            if len(stores) > 1:
                first, other = list(stores)[:2]
                self._fail(f"service.pipelines.{stores[other]}.exporters",
                           f"uses {other!r}, but service.pipelines.{stores[first]} uses {first!r}: otelite "
                           f"keeps one store, so every pipeline names the same one")

    def listeners(self) -> list[tuple[str, str]]:
        """(config key, HOST:PORT) of every socket otelite will listen on."""
        out = []
        for kind in KINDS:
            for name, comp in getattr(self, kind).items():
                listeners = getattr(comp, "listeners", None)
                if listeners is not None:
                    out.extend((f"{kind}.{name}.{key}", endpoint) for key, endpoint in listeners())
        return out

    def _fail(self, key: str, message: str) -> None:
        raise ConfigError(f"{self.source}: {key}: {message}")


_TOP_LEVEL = {"receivers", "processors", "exporters", "service", "extensions", "connectors", "auth", "api"}


# --- overlaying YAML onto dataclasses --------------------------------------------------------------------

def _overlay(target: Any, data: Any, path: str, source: str) -> Any:
    """Return `target` (a dataclass instance) updated from the mapping `data`; unknown keys are errors."""
    if data is None:
        return target
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {path}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(target)}
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else str(key)
        f = fields.get(key)
        if f is None or key in ("source", "registry"):
            raise ConfigError(f"{source}: {key_path}: unknown key (known: {', '.join(sorted(fields))})")
        current = getattr(target, key)
        setattr(target, key, _convert(current, f, value, key_path, source))
    return target


def _convert(current: Any, f: dataclasses.Field, value: Any, path: str, source: str) -> Any:
    """One field's YAML value. Sections and durations are recognised by the field's metadata (the helpers
    in collector/component.py); scalars by the type of their default."""
    meta = f.metadata
    if "when_given" in meta:
        return _overlay(meta["when_given"](), value, path, source)
    if "mapping_of" in meta:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {path}: expected a mapping of names to sections")
        return {str(k): _overlay(meta["mapping_of"](), v, f"{path}.{k}", source) for k, v in value.items()}
    if "optional_section" in meta:
        section_type = meta["optional_section"]
        if value is None:
            # `grpc:` with nothing under it enables the section with defaults, as in the Collector.
            return section_type()
        return _overlay(current if current is not None else section_type(), value, path, source)
    if dataclasses.is_dataclass(current):
        return _overlay(current, value, path, source)
    try:
        if meta.get("duration"):
            return parse_duration(value)
        if meta.get("byte_size"):
            return parse_size(value)
        if isinstance(current, bool):
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, got {value!r}")
            return value
        if isinstance(current, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"expected an integer, got {value!r}")
            return value
        if isinstance(current, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"expected a number, got {value!r}")
            return float(value)
        if isinstance(current, list):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"expected a list of names, got {value!r}")
            return value
        if isinstance(current, dict):
            if not isinstance(value, dict):
                raise ValueError(f"expected a mapping, got {value!r}")
            return value
        if current is None or isinstance(current, str):
            if value is not None and not isinstance(value, str):
                raise ValueError(f"expected a string, got {value!r}")
            return value
    except ValueError as e:
        raise ConfigError(f"{source}: {path}: {e}") from None
    raise ConfigError(f"{source}: {path}: unsupported value {value!r}")


_ENV = re.compile(r"\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(node: Any) -> Any:
    """Expand ``${env:VAR}`` / ``${VAR}`` (with ``:-default``) in strings, as the Collector does."""
    if isinstance(node, str):
        def sub(m: re.Match) -> str:
            return os.environ.get(m.group(1), m.group(2) if m.group(2) is not None else "")
        expanded = _ENV.sub(sub, node)
        # A value that was only a variable is re-read as YAML so `${env:PORT}` can become an int.
        if expanded != node and _ENV.fullmatch(node):
            try:
                return yaml.safe_load(expanded)
            except yaml.YAMLError:
                return expanded
        return expanded
    if isinstance(node, dict):
        return {k: _expand_env(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_env(v) for v in node]
    return node


def config_from_mapping(doc: Any, source: str = "<config>", registry: Registry = BUILTIN) -> Config:
    """Build a Config from an already-parsed YAML document (defaults overlaid by `doc`) and validate it.
    `registry`: the component types the file may use (collector/components.py's by default)."""
    cfg = Config(source=source, registry=registry)
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with receivers/processors/exporters/service")
    doc = _expand_env(doc)
    for key in doc:
        if key not in _TOP_LEVEL:
            raise ConfigError(f"{source}: {key}: unknown key (known: {', '.join(sorted(_TOP_LEVEL))})")
    for key in ("extensions", "connectors"):
        if doc.get(key):
            raise ConfigError(f"{source}: {key}: otelite has no {key}; remove them")
    for section in KINDS:
        if section not in doc:
            continue
        comps = doc[section]
        if comps is None:
            comps = {}
        if not isinstance(comps, dict):
            raise ConfigError(f"{source}: {section}: expected a mapping of components")
        built: dict[str, Any] = {}
        for comp_id, body in comps.items():
            factory = registry.get(section, component_type(str(comp_id)))
            if factory is None:
                raise ConfigError(f"{source}: {section}.{comp_id}: unknown component type "
                                  f"{component_type(str(comp_id))!r} (known: {', '.join(registry.types(section))})")
            built[str(comp_id)] = _overlay(factory.config(), body, f"{section}.{comp_id}", source)
        setattr(cfg, section, built)
    if "auth" in doc:
        cfg.auth = _overlay(AuthConfig(), doc["auth"], "auth", source)
    if "api" in doc:
        cfg.api = _overlay(ApiConfig(), doc["api"], "api", source)
    if "service" in doc:
        svc = doc["service"] or {}
        if not isinstance(svc, dict):
            raise ConfigError(f"{source}: service: expected a mapping")
        for key in svc:
            if key not in ("pipelines", "extensions", "telemetry"):
                raise ConfigError(f"{source}: service.{key}: unknown key (known: extensions, pipelines, telemetry)")
        if "extensions" in svc:
            cfg.service.extensions = _convert([], _field(ServiceConfig, "extensions"), svc["extensions"] or [],
                                              "service.extensions", source)
        if "telemetry" in svc:
            cfg.service.telemetry = svc["telemetry"] or {}
        if "pipelines" in svc:
            pipes = svc["pipelines"] or {}
            if not isinstance(pipes, dict):
                raise ConfigError(f"{source}: service.pipelines: expected a mapping")
            built_p: dict[str, PipelineConfig] = {}
            for pid, body in pipes.items():
                ptype = component_type(str(pid))
                if ptype not in SIGNALS:
                    raise ConfigError(f"{source}: service.pipelines.{pid}: otelite serves traces and metrics "
                                      f"pipelines, not {ptype!r}")
                built_p[str(pid)] = _overlay(PipelineConfig(receivers=[], processors=[], exporters=[]),
                                             body, f"service.pipelines.{pid}", source)
            cfg.service.pipelines = built_p
    cfg.validate()
    return cfg


def _field(cls: type, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def load_config(path: str | os.PathLike | None = None, registry: Registry = BUILTIN) -> Config:
    """Load a YAML file over the embedded defaults; with no path, the defaults alone."""
    if path is None:
        return config_from_mapping({}, "<defaults>", registry)
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{source}: cannot read the config file: {e.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: {_yaml_problem(e)}") from None
    return config_from_mapping(doc, source, registry)


def _yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's message names "<unicode string>" and spans lines; say where in the file, on one line."""
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    if mark is None or not problem:
        return f"not valid YAML: {e}"
    text = f"line {mark.line + 1}, column {mark.column + 1}: not valid YAML: {problem}"
    context, context_mark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and context_mark is not None:
        text += f" ({context} at line {context_mark.line + 1}, column {context_mark.column + 1})"
    return text
