"""Remote-write 1.0's protobuf messages, built at run time from the specification's schema.

The specification ("Protocol") defines four messages; they are declared here with `descriptor_pb2` in a
private descriptor pool, so no generated code is committed and nothing clashes with another `prometheus`
package a process may load:

    message WriteRequest { repeated TimeSeries timeseries = 1; reserved 2; reserved 3; }
    message TimeSeries { repeated Label labels = 1; repeated Sample samples = 2; }
    message Label { string name = 1; string value = 2; }
    message Sample { double value = 1; int64 timestamp = 2; }
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _file() -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto(name="otelite/prometheus_remote_write_1_0.proto",
                                            package="prometheus", syntax="proto3")

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> descriptor_pb2.DescriptorProto:
        m = fd.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            f = m.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                f.type_name = type_name
        return m

    optional, repeated = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
    write = message("WriteRequest", ("timeseries", 1, _F.TYPE_MESSAGE, repeated, ".prometheus.TimeSeries"))
    for number in (2, 3):  # reserved: Cortex's source, Prometheus' metadata (not in 1.0)
        write.reserved_range.add(start=number, end=number + 1)
    message("TimeSeries", ("labels", 1, _F.TYPE_MESSAGE, repeated, ".prometheus.Label"),
            ("samples", 2, _F.TYPE_MESSAGE, repeated, ".prometheus.Sample"))
    message("Label", ("name", 1, _F.TYPE_STRING, optional, ""), ("value", 2, _F.TYPE_STRING, optional, ""))
    message("Sample", ("value", 1, _F.TYPE_DOUBLE, optional, ""), ("timestamp", 2, _F.TYPE_INT64, optional, ""))
    return fd


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file())
WriteRequest = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("prometheus.WriteRequest"))
TimeSeries = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("prometheus.TimeSeries"))
