"""The Sparkplug B payload schema (Eclipse Sparkplug 3.0, ``org.eclipse.tahu.protobuf.Payload``).

Built as a protobuf descriptor at import, so decoding runs on Google's protobuf runtime with no
generated code. The field numbers are the specification's wire format. Metric values we never
store (DataSet, Template, metadata, property sets) are declared as opaque bytes: the wire type is
the same (length-delimited), so payloads carrying them still parse.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto

# Sparkplug data type codes (specification, section "Data Types").
INT8, INT16, INT32, INT64 = 1, 2, 3, 4
UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME, TEXT = 9, 10, 11, 12, 13, 14
SIGNED_BITS = {INT8: 8, INT16: 16, INT32: 32, INT64: 64}


def _add(message: descriptor_pb2.DescriptorProto, name: str, number: int, kind: int, *,
         repeated: bool = False, type_name: str | None = None, oneof: int | None = None) -> None:
    field = message.field.add(name=name, number=number, type=kind,  # type: ignore[arg-type,unused-ignore]
                              label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if type_name:
        field.type_name = type_name
    if oneof is not None:
        field.oneof_index = oneof


def _build() -> Any:
    file = descriptor_pb2.FileDescriptorProto(
        name="oemr/sparkplug_b.proto", package="org.eclipse.tahu.protobuf", syntax="proto2"
    )
    payload = file.message_type.add(name="Payload")
    metric = payload.nested_type.add(name="Metric")
    metric.oneof_decl.add(name="value")
    for name, number, kind in (
        ("name", 1, _F.TYPE_STRING), ("alias", 2, _F.TYPE_UINT64),
        ("timestamp", 3, _F.TYPE_UINT64), ("datatype", 4, _F.TYPE_UINT32),
        ("is_historical", 5, _F.TYPE_BOOL), ("is_transient", 6, _F.TYPE_BOOL),
        ("is_null", 7, _F.TYPE_BOOL), ("metadata", 8, _F.TYPE_BYTES),
        ("properties", 9, _F.TYPE_BYTES),
    ):
        _add(metric, name, number, kind)
    for name, number, kind in (
        ("int_value", 10, _F.TYPE_UINT32), ("long_value", 11, _F.TYPE_UINT64),
        ("float_value", 12, _F.TYPE_FLOAT), ("double_value", 13, _F.TYPE_DOUBLE),
        ("boolean_value", 14, _F.TYPE_BOOL), ("string_value", 15, _F.TYPE_STRING),
        ("bytes_value", 16, _F.TYPE_BYTES), ("dataset_value", 17, _F.TYPE_BYTES),
        ("template_value", 18, _F.TYPE_BYTES), ("extension_value", 19, _F.TYPE_BYTES),
    ):
        _add(metric, name, number, kind, oneof=0)
    _add(payload, "timestamp", 1, _F.TYPE_UINT64)
    _add(payload, "metrics", 2, _F.TYPE_MESSAGE, repeated=True,
         type_name=".org.eclipse.tahu.protobuf.Payload.Metric")
    _add(payload, "seq", 3, _F.TYPE_UINT64)
    _add(payload, "uuid", 4, _F.TYPE_STRING)
    _add(payload, "body", 5, _F.TYPE_BYTES)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("org.eclipse.tahu.protobuf.Payload")
    )


Payload: Any = _build()
