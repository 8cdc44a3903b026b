"""OpenTelemetry tracing: spans around the feed and every query.

Spans are exported only when the standard OTEL_* variables ask for it (an OTLP endpoint, or
OTEL_TRACES_EXPORTER=otlp|console). Otherwise the API's default no-op tracer is used and a span
costs a function call.
"""

from __future__ import annotations

import os

from opentelemetry import trace

SERVICE_NAME = "cruddur-api"


def export_requested(environ=os.environ) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").lower()
    if exporter == "none":
        return False
    return bool(
        exporter in {"otlp", "console"}
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def build_provider(environ=os.environ):
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", SERVICE_NAME)})
    provider = TracerProvider(resource=resource)
    if environ.get("OTEL_TRACES_EXPORTER", "").lower() == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def get_tracer(provider=None):
    """The app's tracer: from the given provider, a new SDK provider, or the no-op default."""
    if provider is None and export_requested():
        provider = build_provider()
    return trace.get_tracer("cruddur.api", tracer_provider=provider)
