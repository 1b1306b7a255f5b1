"""An OTLP metrics request type that leaves each data point's attributes as their encoded bytes.

Why: walking a metrics request spent most of its time on the data points' attributes (a Python object per
KeyValue, then a dict, its sorted JSON and the series fingerprint; docs/benchmarks.md, issue 16), although
a sidecar's series repeat from one export to the next. `RawAttributesMetricsRequest` is the same schema as
`ExportMetricsServiceRequest` with one change: the `attributes` field of the four data point messages is
declared `repeated bytes` instead of `repeated KeyValue`. Both are length-delimited on the wire, so every
valid request parses the same way, and a point's attributes come out as a tuple of the KeyValues' encoded
bytes, which normalize/otlp.py looks up among the attribute lists it has already worked out (`SeriesMemo`).

The bytes are not checked when the request is parsed (a KeyValue message would be): `key_values` parses
them as KeyValue messages, with the same errors, the first time they are seen.
"""

from __future__ import annotations

from typing import Iterable

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

_POINT_MESSAGES = ("NumberDataPoint", "HistogramDataPoint", "ExponentialHistogramDataPoint", "SummaryDataPoint")


def _raw_attributes_request() -> type:
    """Build the message class in a descriptor pool of its own (its names are those of the real schema)."""
    pool = descriptor_pool.DescriptorPool()
    for module in (common_pb2, resource_pb2, metrics_pb2, metrics_service_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        if module is metrics_pb2:
            changed = 0
            for message in proto.message_type:
                if message.name in _POINT_MESSAGES:
                    for f in message.field:
                        if f.name == "attributes":
                            f.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
                            f.ClearField("type_name")
                            changed += 1
            if changed != len(_POINT_MESSAGES):  # a schema change of opentelemetry-proto: fail at import
                raise RuntimeError("the OTLP data point messages no longer have the expected attributes fields")
        pool.Add(proto)
    name = metrics_service_pb2.ExportMetricsServiceRequest.DESCRIPTOR.full_name
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


RawAttributesMetricsRequest = _raw_attributes_request()


def key_values(encoded: Iterable[bytes]) -> list[common_pb2.KeyValue]:
    """The KeyValue messages of a data point's encoded attributes (raises protobuf's DecodeError)."""
    return [common_pb2.KeyValue.FromString(b) for b in encoded]
