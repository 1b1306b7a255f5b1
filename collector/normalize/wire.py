"""OTLP request types that leave the attributes of data points and spans as their encoded bytes.

Why: walking a metrics request spent most of its time on the data points' attributes (a Python object per
KeyValue, then a dict, its sorted JSON and the series fingerprint; docs/benchmarks.md, issue 16), although
a sidecar's series repeat from one export to the next. `RawAttributesMetricsRequest` is the same schema as
`ExportMetricsServiceRequest` with one change: the `attributes` field of the four data point messages is
declared `repeated bytes` instead of `repeated KeyValue`. Both are length-delimited on the wire, so every
valid request parses the same way, and a point's attributes come out as a tuple of the KeyValues' encoded
bytes, which normalize/otlp.py looks up among the attribute lists it has already worked out (`SeriesMemo`).
`RawAttributesTraceRequest` does the same for `Span.attributes`: spans' attribute lists differ (ids, paths),
but most of their single attributes repeat, and each is looked up alone (`KeyValueMemo`).

The bytes are not checked when the request is parsed (a KeyValue message would be): `key_values` parses
them as KeyValue messages, with the same errors, the first time they are seen.
"""

from __future__ import annotations

from typing import Iterable

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

_POINT_MESSAGES = ("NumberDataPoint", "HistogramDataPoint", "ExponentialHistogramDataPoint", "SummaryDataPoint")


def _raw_attributes_request(data_module, service_module, messages: tuple[str, ...], request: type) -> type:
    """`request`'s message class, built in a descriptor pool of its own (its names are those of the real
    schema) from the same files, but with the `attributes` of `messages` (in `data_module`) as bytes."""
    pool = descriptor_pool.DescriptorPool()
    for module in (common_pb2, resource_pb2, data_module, service_module):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        if module is data_module:
            changed = 0
            for message in proto.message_type:
                if message.name in messages:
                    for f in message.field:
                        if f.name == "attributes":
                            f.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
                            f.ClearField("type_name")
                            changed += 1
            if changed != len(messages):  # a schema change of opentelemetry-proto: fail at import
                raise RuntimeError(f"{', '.join(messages)} no longer have the expected attributes fields")
        pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(request.DESCRIPTOR.full_name))


RawAttributesMetricsRequest = _raw_attributes_request(metrics_pb2, metrics_service_pb2, _POINT_MESSAGES,
                                                      metrics_service_pb2.ExportMetricsServiceRequest)
# Spans only: their events' and links' attributes stay KeyValue messages (few, and walked as before).
RawAttributesTraceRequest = _raw_attributes_request(trace_pb2, trace_service_pb2, ("Span",),
                                                    trace_service_pb2.ExportTraceServiceRequest)


def key_values(encoded: Iterable[bytes]) -> list[common_pb2.KeyValue]:
    """The KeyValue messages of encoded attributes (raises protobuf's DecodeError)."""
    return [common_pb2.KeyValue.FromString(b) for b in encoded]
