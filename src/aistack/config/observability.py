"""What the gateway tells about itself: `metrics:`, `tracing:` and `logging:`."""

from __future__ import annotations

from typing import Literal

from aistack.config.base import Strict


class MetricsConfig(Strict):
    enabled: bool = True
    # true: /metrics needs an admin or a key with scope `metrics` (a Prometheus bearer
    # token). false: anyone who can reach the gateway reads it.
    auth: bool = True
    # Seconds between polls of each backend's loaded models (Ollama /api/ps); 0: never.
    ps_interval: float = 30.0


class LangfuseConfig(Strict):
    host: str
    public_key: str
    secret_key: str


class TracingConfig(Strict):
    # Where spans go comes from the standard OTEL_* variables, or from `langfuse`.
    enabled: bool = True
    # Put prompts and answers on spans (gen_ai.input/output.messages). Off: they can
    # hold anything a user typed.
    capture_content: bool = False
    langfuse: LangfuseConfig | None = None


class LoggingConfig(Strict):
    # One line per request (never a key, never prompt text).
    requests: bool = True
    # json for collectors, text for a terminal, auto: text when stderr is a terminal.
    format: Literal["auto", "json", "text"] = "auto"
