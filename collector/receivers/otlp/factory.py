"""The `otlp` receiver type. otelite runs one OTLP receiver; `collector/service.py` starts its gRPC server
and mounts its HTTP routes, handing each signal to the next consumer the pipelines built
(collector/pipeline/fanout.py)."""

from __future__ import annotations

from otelite.collector.component import Factory
from otelite.collector.receivers.otlp.config import OtlpReceiverConfig

FACTORY = Factory(kind="receivers", type="otlp", config=OtlpReceiverConfig)
