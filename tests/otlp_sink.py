"""A local OTLP/HTTP trace receiver: what a worker process exports, in a test's hands.

Stands in for a collector on the same machine: the worker's batch exporter does all its
work (encode, POST, wait for 200). The e2e tracing test reads the spans it kept; the
tracing-on throughput benchmark only counts them (`keep=False`).
"""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span


class OtlpSink:
    """`with OtlpSink() as sink:` then OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint."""

    def __init__(self, *, keep: bool = True) -> None:
        self.requests = 0
        self.spans = 0
        self.kept: list[Span] = []
        """Every span received, when `keep`."""
        self._keep = keep
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest.FromString(body)
                spans = [
                    span
                    for resource in request.resource_spans
                    for scope in resource.scope_spans
                    for span in scope.spans
                ]
                with sink._lock:
                    sink.requests += 1
                    sink.spans += len(spans)
                    if sink._keep:
                        sink.kept.extend(spans)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *_: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> "OtlpSink":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def attributes(span: Span) -> dict[str, object]:
    """A received span's attributes as plain values."""
    found: dict[str, object] = {}
    for item in span.attributes:
        kind = item.value.WhichOneof("value")
        found[item.key] = getattr(item.value, kind) if kind else None
    return found
