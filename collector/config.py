"""Typed configuration in the OpenTelemetry Collector's shape.

Loading follows the Collector's confmap habit: build the default config in code, overlay the YAML file
section by section, then ``validate()`` the rules that span fields. Every error names the offending key
(as a dotted path) and the file, so a typo stops the process with a message a person can act on.

Only the components otelite implements are accepted: the ``otlp`` receiver, the ``batch`` and
``memory_limiter`` processors, the ``sqlite`` and ``prometheus`` exporters. A Collector config that uses
only these loads unchanged (component ids may carry a ``/name`` suffix, ``${env:VAR}`` is expanded).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from otelite.collector.times import parse_duration


class ConfigError(ValueError):
    """An invalid configuration: the message names the key and the file."""


# --- value parsing -------------------------------------------------------------------------------------

def parse_endpoint(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:4317`` for IPv6) → (host, port)."""
    if not isinstance(text, str) or ":" not in text:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    host, _, port_s = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError(f"expected a port number 0-65535 in {text!r}")
    return host or "0.0.0.0", int(port_s)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- the config tree -----------------------------------------------------------------------------------
# Each field's comment says what happens when it is omitted.

@dataclass
class GrpcServerConfig:
    endpoint: str = "127.0.0.1:4317"  # loopback unless configured otherwise (otlp.md: sidecar default)
    max_recv_msg_size_mib: float = 4.0  # larger messages → RESOURCE_EXHAUSTED
    max_concurrent_streams: int = 0  # 0: grpc's default


@dataclass
class HttpServerConfig:
    endpoint: str = "127.0.0.1:4318"  # serves OTLP/HTTP, the REST API, /healthz and /metrics
    max_request_body_size: int = 20 * 1024 * 1024  # bytes, enforced after decompression → 413
    traces_url_path: str = "/v1/traces"
    metrics_url_path: str = "/v1/metrics"
    logs_url_path: str = "/v1/logs"  # answered 404: logs are not stored yet


@dataclass
class OtlpProtocols:
    grpc: GrpcServerConfig | None = field(default_factory=GrpcServerConfig)  # null/absent disables it
    http: HttpServerConfig | None = field(default_factory=HttpServerConfig)


@dataclass
class OtlpReceiverConfig:
    protocols: OtlpProtocols = field(default_factory=OtlpProtocols)
    # "none": open, as sidecars expect (data goes to the default project or the one named by the
    # X-Otelite-Project header); "required": a key with the `ingest` scope picks the project (auth.md).
    auth: str = "none"
    # Processes that decode and normalize protobuf payloads, so ingest uses more than the one core the
    # event loop and the writer share (collector/pipeline/walker.py); 0 does it all in the event loop.
    decode_workers: int = 1


@dataclass
class BatchProcessorConfig:
    # The store's group commit: the writer commits when this many items are pending or `timeout` passed
    # since the first one arrived, whichever comes first. Acknowledgement waits for that commit.
    send_batch_size: int = 8192
    send_batch_max_size: int = 0  # 0: no cap beyond the queue itself
    timeout: float = 0.0  # seconds to wait for send_batch_size items; clients wait for the commit


@dataclass
class MemoryLimiterConfig:
    # Off unless limit_mib or limit_percentage is set. Above (limit - spike) the receivers refuse new
    # data with 503/UNAVAILABLE until memory falls again.
    check_interval: float = 1.0
    limit_mib: int = 0
    spike_limit_mib: int = 0  # default: 20% of the limit, as in the Collector
    limit_percentage: int = 0
    spike_limit_percentage: int = 0


@dataclass
class RetentionConfig:
    traces: float = 7 * 86400.0  # seconds of spans kept; 0 keeps forever
    metrics: float = 30 * 86400.0  # seconds of metric points kept; 0 keeps forever
    check_interval: float = 60.0  # how often expired rows are looked for
    chunk_rows: int = 5000  # rows deleted per transaction, so deletion never stalls ingest


@dataclass
class SendingQueueConfig:
    # Bounded admission in front of the writer. When full, receivers answer 503 + Retry-After.
    queue_size: int = 20_000  # about 1.5 s of work: bounds RSS, acks stay within client timeouts
    sizer: str = "items"  # "items" (spans + data points) or "requests"


@dataclass
class SqliteExporterConfig:
    path: str = "./otelite.db"
    synchronous: str = "NORMAL"  # NORMAL survives a process crash (WAL); FULL survives power loss
    cache_mib: int = 128  # page cache of the writer; store.md: the random trace-id index needs it
    busy_timeout: float = 5.0  # seconds a write waits for a lock before retrying the batch
    # Point columns the metrics engine keeps between queries (collector/store/points.py), one cache shared
    # by every dialect; least recently used metrics are dropped beyond this. 0: nothing is kept.
    query_cache_mib: int = 256
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    sending_queue: SendingQueueConfig = field(default_factory=SendingQueueConfig)


@dataclass
class PrometheusExporterConfig:
    endpoint: str | None = None  # None: /metrics on the main HTTP listener
    metric_expiration: float = 300.0


@dataclass
class RateLimitConfig:
    requests: int = 60  # tokens refilled per `per`
    per: float = 60.0  # seconds
    burst: int = 0  # bucket size; 0: `requests`


@dataclass
class AuthConfig:
    # "required": every REST route needs an API key. "none": local development only, refused unless
    # every listener is on loopback (auth.md).
    mode: str = "required"
    # Token buckets per API key and route class (e.g. `query`, `write`); a class not listed is unlimited.
    rate_limits: dict[str, RateLimitConfig] = field(default_factory=dict)


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


@dataclass
class Config:
    receivers: dict[str, OtlpReceiverConfig] = field(default_factory=lambda: {"otlp": OtlpReceiverConfig()})
    processors: dict[str, Any] = field(default_factory=lambda: {
        "batch": BatchProcessorConfig(), "memory_limiter": MemoryLimiterConfig()})
    exporters: dict[str, Any] = field(default_factory=lambda: {"sqlite": SqliteExporterConfig()})
    service: ServiceConfig = field(default_factory=ServiceConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)  # otelite's own section (not a Collector one)
    source: str = "<defaults>"  # the file the config came from, for messages

    # -- resolved views: the one component of each kind a pipeline uses -----------------------------
    @property
    def otlp(self) -> OtlpReceiverConfig:
        return self._component(self.receivers, "otlp", OtlpReceiverConfig)

    @property
    def batch(self) -> BatchProcessorConfig:
        return self._component(self.processors, "batch", BatchProcessorConfig)

    @property
    def memory_limiter(self) -> MemoryLimiterConfig:
        return self._component(self.processors, "memory_limiter", MemoryLimiterConfig)

    @property
    def sqlite(self) -> SqliteExporterConfig:
        return self._component(self.exporters, "sqlite", SqliteExporterConfig)

    @property
    def prometheus(self) -> PrometheusExporterConfig:
        return self._component(self.exporters, "prometheus", PrometheusExporterConfig)

    def _component(self, section: dict[str, Any], kind: str, default_type: type) -> Any:
        used = {name for p in self.service.pipelines.values()
                for name in (p.receivers + p.processors + p.exporters)}
        for name, comp in section.items():
            if _component_type(name) == kind and name in used:
                return comp
        for name, comp in section.items():
            if _component_type(name) == kind:
                return comp
        # Not configured at all: the defaults apply (memory_limiter's default is off).
        return default_type()

    def validate(self) -> None:
        """Rules that span fields (the Collector's `Validate()`); raises ConfigError naming the key."""
        sections = {"receivers": self.receivers, "processors": self.processors, "exporters": self.exporters}
        if not self.service.pipelines:
            self._fail("service.pipelines", "at least one pipeline (traces or metrics) is required")
        for pname, p in self.service.pipelines.items():
            for kind, names in (("receivers", p.receivers), ("processors", p.processors),
                                ("exporters", p.exporters)):
                for n in names:
                    if n not in sections[kind]:
                        self._fail(f"service.pipelines.{pname}.{kind}",
                                   f"references {n!r}, which is not configured under {kind}")
            if not p.receivers:
                self._fail(f"service.pipelines.{pname}.receivers", "must list at least one receiver")
            if not any(_component_type(n) == "sqlite" for n in p.exporters):
                self._fail(f"service.pipelines.{pname}.exporters", "must include the sqlite exporter")
        if self.service.extensions:
            self._fail("service.extensions", "otelite has no extensions; remove them")
        if len(self.receivers) > 1:
            self._fail("receivers", f"otelite runs one otlp receiver; got {', '.join(self.receivers)}")
        for name, r in self.receivers.items():
            if r.protocols.grpc is None and r.protocols.http is None:
                self._fail(f"receivers.{name}.protocols", "enable grpc, http or both")
        sq = self.sqlite
        if sq.synchronous.upper() not in ("NORMAL", "FULL"):
            self._fail("exporters.sqlite.synchronous", f"must be NORMAL or FULL, got {sq.synchronous!r}")
        sq.synchronous = sq.synchronous.upper()
        if sq.sending_queue.sizer not in ("items", "requests"):
            self._fail("exporters.sqlite.sending_queue.sizer",
                       f"must be items or requests, got {sq.sending_queue.sizer!r}")
        for key, value in (("exporters.sqlite.sending_queue.queue_size", sq.sending_queue.queue_size),
                           ("exporters.sqlite.cache_mib", sq.cache_mib),
                           ("exporters.sqlite.retention.chunk_rows", sq.retention.chunk_rows),
                           ("processors.batch.send_batch_size", self.batch.send_batch_size)):
            if value <= 0:
                self._fail(key, f"must be positive, got {value}")
        if not sq.path:
            self._fail("exporters.sqlite.path", "must not be empty")
        for key, endpoint in self.listeners():
            try:
                parse_endpoint(endpoint)
            except ValueError as e:
                self._fail(key, str(e))
        for name, r in self.receivers.items():
            if r.protocols.http is not None:
                h = r.protocols.http
                for attr in ("traces_url_path", "metrics_url_path", "logs_url_path"):
                    if not getattr(h, attr).startswith("/"):
                        self._fail(f"receivers.{name}.protocols.http.{attr}", "must start with /")
                if h.max_request_body_size <= 0:
                    self._fail(f"receivers.{name}.protocols.http.max_request_body_size", "must be positive")
        for name, r in self.receivers.items():
            if not 0 <= r.decode_workers <= 64:
                self._fail(f"receivers.{name}.decode_workers", f"must be 0 to 64, got {r.decode_workers}")
            if r.auth not in ("none", "required"):
                self._fail(f"receivers.{name}.auth", f"must be none or required, got {r.auth!r}")
        if self.auth.mode not in ("none", "required"):
            self._fail("auth.mode", f"must be required or none, got {self.auth.mode!r}")
        for cls, limit in self.auth.rate_limits.items():
            if limit.requests <= 0 or limit.per <= 0 or limit.burst < 0:
                self._fail(f"auth.rate_limits.{cls}", "requests and per must be positive, burst not negative")
        if self.auth.mode == "none":
            for key, endpoint in self.listeners():
                if not is_loopback(parse_endpoint(endpoint)[0]):
                    self._fail("auth.mode", f"'none' is only allowed when every listener is on loopback, "
                                            f"but {key} is {endpoint}")
        prom = self.prometheus
        if prom.endpoint is not None:
            try:
                parse_endpoint(prom.endpoint)
            except ValueError as e:
                self._fail("exporters.prometheus.endpoint", str(e))

    def listeners(self) -> list[tuple[str, str]]:
        """(config key, HOST:PORT) of every socket otelite will listen on."""
        out = []
        for name, r in self.receivers.items():
            for proto in ("grpc", "http"):
                srv = getattr(r.protocols, proto)
                if srv is not None:
                    out.append((f"receivers.{name}.protocols.{proto}.endpoint", srv.endpoint))
        if self.otlp.protocols.http is None:
            out.append(("receivers.otlp.protocols.http.endpoint", HttpServerConfig().endpoint))
        if self.prometheus.endpoint is not None:
            out.append(("exporters.prometheus.endpoint", self.prometheus.endpoint))
        return out

    def _fail(self, key: str, message: str) -> None:
        raise ConfigError(f"{self.source}: {key}: {message}")


_COMPONENT_TYPES: dict[str, dict[str, type]] = {
    "receivers": {"otlp": OtlpReceiverConfig},
    "processors": {"batch": BatchProcessorConfig, "memory_limiter": MemoryLimiterConfig},
    "exporters": {"sqlite": SqliteExporterConfig, "prometheus": PrometheusExporterConfig},
}
_TOP_LEVEL = {"receivers", "processors", "exporters", "service", "extensions", "connectors", "auth"}


def _component_type(component_id: str) -> str:
    """Collector component ids are ``type[/name]``."""
    return component_id.split("/", 1)[0]


# --- overlaying YAML onto dataclasses --------------------------------------------------------------------

_DURATION_FIELDS = {"timeout", "check_interval", "traces", "metrics", "busy_timeout", "metric_expiration", "per"}


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
        if f is None or key == "source":
            raise ConfigError(f"{source}: {key_path}: unknown key (known: {', '.join(sorted(fields))})")
        current = getattr(target, key)
        setattr(target, key, _convert(current, f, value, key_path, source))
    return target


def _convert(current: Any, f: dataclasses.Field, value: Any, path: str, source: str) -> Any:
    if f.name == "protocols":
        # As in the Collector, a file that lists protocols enables exactly those.
        return _overlay(OtlpProtocols(grpc=None, http=None), value, path, source)
    if f.name == "rate_limits":
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {path}: expected a mapping of route class to limit")
        return {str(k): _overlay(RateLimitConfig(), v, f"{path}.{k}", source) for k, v in value.items()}
    if dataclasses.is_dataclass(current):
        return _overlay(current, value, path, source)
    if f.name in ("grpc", "http"):
        if value is None:
            # `grpc:` with nothing under it enables the protocol with defaults, as in the Collector.
            return GrpcServerConfig() if f.name == "grpc" else HttpServerConfig()
        base = current if current is not None else (GrpcServerConfig() if f.name == "grpc" else HttpServerConfig())
        return _overlay(base, value, path, source)
    try:
        if f.name in _DURATION_FIELDS:
            return parse_duration(value)
        if isinstance(current, bool):
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, got {value!r}")
            return value
        if isinstance(current, int) and not isinstance(current, bool):
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


def config_from_mapping(doc: Any, source: str = "<config>") -> Config:
    """Build a Config from an already-parsed YAML document (defaults overlaid by `doc`) and validate it."""
    cfg = Config(source=source)
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
    for section, kinds in _COMPONENT_TYPES.items():
        if section not in doc:
            continue
        comps = doc[section]
        if comps is None:
            comps = {}
        if not isinstance(comps, dict):
            raise ConfigError(f"{source}: {section}: expected a mapping of components")
        built: dict[str, Any] = {}
        for comp_id, body in comps.items():
            kind = _component_type(str(comp_id))
            if kind not in kinds:
                raise ConfigError(f"{source}: {section}.{comp_id}: unknown component type {kind!r} "
                                  f"(known: {', '.join(sorted(kinds))})")
            built[str(comp_id)] = _overlay(kinds[kind](), body, f"{section}.{comp_id}", source)
        setattr(cfg, section, built)
    if "auth" in doc:
        cfg.auth = _overlay(AuthConfig(), doc["auth"], "auth", source)
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
                ptype = _component_type(str(pid))
                if ptype not in ("traces", "metrics"):
                    raise ConfigError(f"{source}: service.pipelines.{pid}: otelite serves traces and metrics "
                                      f"pipelines, not {ptype!r}")
                built_p[str(pid)] = _overlay(PipelineConfig(receivers=[], processors=[], exporters=[]),
                                             body, f"service.pipelines.{pid}", source)
            cfg.service.pipelines = built_p
    cfg.validate()
    return cfg


def _field(cls: type, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Load a YAML file over the embedded defaults; with no path, the defaults alone."""
    if path is None:
        return config_from_mapping({}, "<defaults>")
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{source}: cannot read the config file: {e.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: {_yaml_problem(e)}") from None
    return config_from_mapping(doc, source)


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


def apply_overrides(cfg: Config, *, db: str | None = None, grpc_endpoint: str | None = None,
                    http_endpoint: str | None = None) -> Config:
    """Command-line flags override the file (DEVELOPERS.md: `otelite serve --db/--grpc-endpoint/...`)."""
    if db is not None:
        cfg.sqlite.path = db
    otlp = cfg.otlp
    if grpc_endpoint is not None:
        otlp.protocols.grpc = otlp.protocols.grpc or GrpcServerConfig()
        otlp.protocols.grpc.endpoint = grpc_endpoint
    if http_endpoint is not None:
        otlp.protocols.http = otlp.protocols.http or HttpServerConfig()
        otlp.protocols.http.endpoint = http_endpoint
    source, cfg.source = cfg.source, "command line"
    cfg.validate()
    cfg.source = source
    return cfg
