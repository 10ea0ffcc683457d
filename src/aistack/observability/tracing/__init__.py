"""OpenTelemetry traces following the GenAI conventions, exported over OTLP/HTTP (JSON):
settings (settings.py), span encoding (spans.py), the queue and export (export.py)."""

from __future__ import annotations

from aistack.observability.tracing.export import Tracer
from aistack.observability.tracing.settings import (
    TraceSettings,
    parse_traceparent,
    settings_from_env,
)

__all__ = ["TraceSettings", "Tracer", "parse_traceparent", "settings_from_env"]
