"""Unit tests for configuration loading (pure logic; live start-up cases are in test_lifecycle.py)."""

from dataclasses import dataclass
from pathlib import Path

import pytest

from otelite.collector.commands import apply_overrides
from otelite.collector.component import Factory, InvalidField, duration, parse_endpoint
from otelite.collector.components import BUILTIN
from otelite.collector.config import ConfigError, config_from_mapping, load_config
from otelite.collector.times import parse_duration

ROOT = Path(__file__).parent.parent


def _without_source(cfg):
    cfg.source = ""
    return cfg


def test_shipped_default_config_equals_embedded_defaults():
    assert _without_source(load_config(ROOT / "config" / "otelite.yaml")) == _without_source(load_config(None))


def test_sidecar_example_loads():
    cfg = load_config(ROOT / "config" / "sidecar.yaml")
    assert cfg.sqlite.path == "/var/lib/otelite/otelite.db"
    assert cfg.sqlite.retention.traces == 2 * 86400
    assert cfg.memory_limiter.limit_mib == 640


@pytest.mark.parametrize("text, seconds", [("200ms", 0.2), ("1h30m", 5400.0), ("7d", 604800.0), ("2w", 1209600.0),
                                           (15, 15.0), ("0s", 0.0), ("1.5s", 1.5)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["7 days", "", "d", "-1s", True, "1x"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_parse_endpoint():
    assert parse_endpoint("127.0.0.1:4317") == ("127.0.0.1", 4317)
    assert parse_endpoint("[::1]:4318") == ("::1", 4318)
    assert parse_endpoint(":4318") == ("0.0.0.0", 4318)
    for bad in ("4318", "host:port", "h:70000"):
        with pytest.raises(ValueError):
            parse_endpoint(bad)


def test_listing_protocols_enables_only_those():
    cfg = config_from_mapping({"receivers": {"otlp": {"protocols": {"http": None}}}})
    assert cfg.otlp.protocols.grpc is None
    assert cfg.otlp.protocols.http is not None and cfg.otlp.protocols.http.endpoint == "127.0.0.1:4318"


def test_component_ids_with_names_and_env_expansion(monkeypatch):
    monkeypatch.setenv("OTELITE_TEST_DB", "/tmp/x.db")
    cfg = config_from_mapping({
        "receivers": {"otlp/app": {"protocols": {"grpc": {"endpoint": "127.0.0.1:5317"}}}},
        "exporters": {"sqlite/main": {"path": "${env:OTELITE_TEST_DB}"}},
        "service": {"pipelines": {"traces/app": {"receivers": ["otlp/app"], "exporters": ["sqlite/main"]}}},
    })
    assert cfg.otlp.protocols.grpc.endpoint == "127.0.0.1:5317"
    assert cfg.sqlite.path == "/tmp/x.db"


@pytest.mark.parametrize("doc, message", [
    ({"receivers": {"otlp": {"protocols": {"grpc": {"endpont": "x"}}}}},
     "f.yaml: receivers.otlp.protocols.grpc.endpont: unknown key"),
    ({"exporters": {"sqlite": {"synchronous": "OFF"}}},
     "f.yaml: exporters.sqlite.synchronous: must be NORMAL or FULL, got 'OFF'"),
    ({"exporters": {"sqlite": {"retention": {"traces": "a week"}}}},
     "f.yaml: exporters.sqlite.retention.traces: expected a duration such as 5s or 7d, got 'a week'"),
    ({"exporters": {"kafka": {}}}, "f.yaml: exporters.kafka: unknown component type 'kafka'"),
    ({"service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["sqlite/x"]}}}},
     "f.yaml: service.pipelines.traces.exporters: references 'sqlite/x', which is not configured"),
    ({"service": {"pipelines": {"logs": {"receivers": ["otlp"], "exporters": ["sqlite"]}}}},
     "f.yaml: service.pipelines.logs: otelite serves traces and metrics pipelines"),
    ({"exporters": {"sqlite": {"sending_queue": {"queue_size": 0}}}},
     "f.yaml: exporters.sqlite.sending_queue.queue_size: must be positive"),
    ({"exporters": {"sqlite": {"compaction": {"direct_min_points": 0}}}},
     "f.yaml: exporters.sqlite.compaction.direct_min_points: must be positive"),
    ({"receivers": {"otlp": {"protocols": {"http": {"endpoint": "nowhere"}}}}},
     "f.yaml: receivers.otlp.protocols.http.endpoint: expected HOST:PORT"),
    ({"processors": {"batch": {"send_batch_size": "many"}}},
     "f.yaml: processors.batch.send_batch_size: expected an integer"),
    ({"bogus": 1}, "f.yaml: bogus: unknown key"),
])
def test_invalid_configs_name_the_key(doc, message):
    with pytest.raises(ConfigError) as info:
        config_from_mapping(doc, "f.yaml")
    assert str(info.value).startswith(message)


def test_flags_override_the_file():
    cfg = apply_overrides(load_config(ROOT / "config" / "sidecar.yaml"), db="/tmp/o.db",
                          grpc_endpoint="127.0.0.1:1", http_endpoint="127.0.0.1:2")
    assert (cfg.sqlite.path, cfg.otlp.protocols.grpc.endpoint, cfg.otlp.protocols.http.endpoint) == \
        ("/tmp/o.db", "127.0.0.1:1", "127.0.0.1:2")
    with pytest.raises(ConfigError, match="command line: receivers.otlp.protocols.http.endpoint"):
        apply_overrides(load_config(None), http_endpoint="bad")


# --- the component registry: configs beside their components, durations by field metadata ------------------

@dataclass
class _WidgetConfig:
    timeout: int = 30  # a count that happens to be called `timeout`: not a duration
    traces: str = "all"  # named like a retention duration, but a plain string
    interval: float = duration(1.0)  # a duration by its metadata, whatever its name

    def validate(self) -> None:
        if self.timeout <= 0:
            raise InvalidField("timeout", f"must be positive, got {self.timeout}")


_WIDGETS = BUILTIN.with_factories(Factory(kind="exporters", type="widget", config=_WidgetConfig))


def _with_widget(body):
    return {"exporters": {"sqlite": {}, "widget": body}}


def test_durations_are_typed_by_field_metadata_not_by_name():
    cfg = config_from_mapping(_with_widget({"timeout": 5, "traces": "sampled", "interval": "1m30s"}),
                              "w.yaml", _WIDGETS)
    widget = cfg.exporters["widget"]
    assert (widget.timeout, widget.traces, widget.interval) == (5, "sampled", 90.0)
    with pytest.raises(ConfigError) as info:
        config_from_mapping(_with_widget({"timeout": "5s"}), "w.yaml", _WIDGETS)
    assert str(info.value) == "w.yaml: exporters.widget.timeout: expected an integer, got '5s'"
    with pytest.raises(ConfigError) as info:
        config_from_mapping(_with_widget({"interval": "soon"}), "w.yaml", _WIDGETS)
    assert str(info.value) == "w.yaml: exporters.widget.interval: expected a duration such as 5s or 7d, got 'soon'"


def test_a_registered_component_is_validated_under_its_own_key():
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"exporters": {"sqlite": {}, "widget/b": {"timeout": 0}}}, "w.yaml", _WIDGETS)
    assert str(info.value) == "w.yaml: exporters.widget/b.timeout: must be positive, got 0"
    # Without the registration the type is unknown, and the message lists what is registered.
    with pytest.raises(ConfigError) as info:
        config_from_mapping(_with_widget({}), "w.yaml")
    assert str(info.value).startswith("w.yaml: exporters.widget: unknown component type 'widget' "
                                      "(known: otlp, otlphttp, prometheus, prometheusremotewrite, sqlite)")
    assert "widget" in _WIDGETS.types("exporters") and "widget" not in BUILTIN.types("exporters")


@pytest.mark.parametrize("doc, message", [
    # The prometheus exporter renders metrics only (as in the Collector).
    ({"exporters": {"sqlite": {}, "prometheus": {}},
      "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["sqlite", "prometheus"]}}}},
     "f.yaml: service.pipelines.traces.exporters: the prometheus exporter does not support traces"),
    # otelite keeps one store: two sqlite exporters in use would leave one pipeline's data out of the API.
    ({"exporters": {"sqlite/a": {"path": "a.db"}, "sqlite/b": {"path": "b.db"}},
      "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["sqlite/a"]},
                                "metrics": {"receivers": ["otlp"], "exporters": ["sqlite/b"]}}}},
     "f.yaml: service.pipelines.metrics.exporters: uses 'sqlite/b', but service.pipelines.traces uses "
     "'sqlite/a': otelite keeps one store, so every pipeline names the same one"),
    ({"exporters": {"sqlite": {}, "prometheus": {}},
      "service": {"pipelines": {"metrics": {"receivers": ["otlp"], "exporters": ["prometheus"]}}}},
     "f.yaml: service.pipelines.metrics.exporters: must include the sqlite exporter"),
])
def test_pipeline_rules_that_span_components(doc, message):
    with pytest.raises(ConfigError) as info:
        config_from_mapping(doc, "f.yaml")
    assert str(info.value) == message
