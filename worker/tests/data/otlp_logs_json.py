"""Prints an OTLP LogsData as the Python OpenTelemetry SDK's protobuf classes encode it in JSON
(google.protobuf.json_format.MessageToJson): the payload of the OpenTelemetry Collector's
RabbitMQ exporter with the otlp_json encoding. Used by worker/tests/shippers.rs."""

from google.protobuf.json_format import MessageToJson
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1.logs_pb2 import (
    SEVERITY_NUMBER_ERROR,
    SEVERITY_NUMBER_INFO,
    SEVERITY_NUMBER_WARN,
    LogRecord,
    LogsData,
    ResourceLogs,
    ScopeLogs,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource


def kv(key, **value):
    return KeyValue(key=key, value=AnyValue(**value))


T0 = 1_714_557_600_000_000_000  # 2024-05-01T10:00:00Z

data = LogsData(
    resource_logs=[
        ResourceLogs(
            resource=Resource(
                attributes=[
                    kv("service.name", string_value="checkout"),
                    kv("host.name", string_value="node-1"),
                ]
            ),
            scope_logs=[
                ScopeLogs(
                    scope=InstrumentationScope(name="checkout.payments", version="1.4.0"),
                    log_records=[
                        LogRecord(
                            time_unix_nano=T0,
                            severity_number=SEVERITY_NUMBER_INFO,
                            severity_text="INFO",
                            body=AnyValue(string_value="python log 0"),
                        ),
                        LogRecord(
                            time_unix_nano=T0 + 1_000_000,
                            severity_number=SEVERITY_NUMBER_WARN,
                            severity_text="WARN",
                            body=AnyValue(string_value="python log 1"),
                            trace_id=bytes.fromhex("5b8efff798038103d269b633813fc60c"),
                            span_id=bytes.fromhex("eee19b7ec3c1b174"),
                            flags=1,
                        ),
                        LogRecord(
                            time_unix_nano=T0 + 2_000_000,
                            severity_number=SEVERITY_NUMBER_ERROR,
                            severity_text="ERROR",
                            body=AnyValue(string_value="python log 2"),
                            attributes=[
                                kv("http.status_code", int_value=502),
                                kv("retry", bool_value=True),
                                kv("ratio", double_value=0.25),
                                kv(
                                    "tags",
                                    array_value=ArrayValue(values=[AnyValue(string_value="a")]),
                                ),
                                kv(
                                    "user",
                                    kvlist_value=KeyValueList(values=[kv("id", int_value=7)]),
                                ),
                            ],
                        ),
                    ],
                )
            ],
        )
    ]
)

print(MessageToJson(data))
