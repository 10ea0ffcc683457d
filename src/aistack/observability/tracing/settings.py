"""Where spans go and which are kept: the standard OTEL_* variables (and Langfuse), and
the caller's W3C traceparent."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

# Encoded spans per POST at most (~64 spans); why: docs/performance.md, "Trace export".
_BATCH_BYTES = 32 * 1024


@dataclass(frozen=True, slots=True)
class TraceSettings:
    endpoint: str  # the full traces URL
    headers: tuple[tuple[str, str], ...] = ()
    service_name: str = "aistack"
    resource: tuple[tuple[str, str], ...] = ()
    sample_ratio: float = 1.0
    capture_content: bool = False
    langfuse: bool = False
    batch_size: int = 512  # spans per POST at most
    batch_bytes: int = _BATCH_BYTES  # and encoded bytes per POST at most (one span at least)
    queue_size: int = 20_000
    interval: float = 1.0
    extra: dict[str, str] = field(default_factory=dict)


def _pairs(raw: str) -> tuple[tuple[str, str], ...]:
    out = []
    for item in raw.split(","):
        if "=" in item:
            k, v = item.split("=", 1)
            out.append((unquote(k.strip()), unquote(v.strip())))
    return tuple(out)


def settings_from_env(
    env: Mapping[str, str],
    *,
    capture_content: bool = False,
    langfuse_host: str | None = None,
    langfuse_public_key: str | None = None,
    langfuse_secret_key: str | None = None,
) -> TraceSettings | None:
    """Tracing settings from the OTEL_* variables (and a Langfuse section); None: off."""
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    if env.get("OTEL_TRACES_EXPORTER", "otlp").lower() == "none":
        return None
    headers = _pairs(env.get("OTEL_EXPORTER_OTLP_HEADERS", ""))
    headers += _pairs(env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS", ""))
    langfuse = False
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
    if not endpoint and env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        endpoint = env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    if langfuse_host:
        langfuse = True
        endpoint = langfuse_host.rstrip("/") + "/api/public/otel/v1/traces"
        token = base64.b64encode(
            f"{langfuse_public_key or ''}:{langfuse_secret_key or ''}".encode()
        ).decode()
        headers += (("Authorization", f"Basic {token}"), ("x-langfuse-ingestion-version", "4"))
    if not endpoint:
        return None
    ratio = 1.0
    sampler = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").lower()
    if sampler.endswith("always_off"):
        ratio = 0.0
    elif sampler.endswith("traceidratio"):
        try:
            ratio = min(1.0, max(0.0, float(env.get("OTEL_TRACES_SAMPLER_ARG", "1"))))
        except ValueError:
            ratio = 1.0
    return TraceSettings(
        endpoint=endpoint,
        headers=headers,
        service_name=env.get("OTEL_SERVICE_NAME", "aistack"),
        resource=_pairs(env.get("OTEL_RESOURCE_ATTRIBUTES", "")),
        sample_ratio=ratio,
        capture_content=capture_content,
        langfuse=langfuse,
    )


def parse_traceparent(v: bytes | None) -> tuple[str, str]:
    """W3C `traceparent`: 00-<32 hex trace id>-<16 hex parent id>-<flags>."""
    if not v:
        return "", ""
    parts = v.decode("latin-1").strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return "", ""
    try:
        int(parts[1], 16)
        int(parts[2], 16)
    except ValueError:
        return "", ""
    if parts[1] == "0" * 32 or parts[2] == "0" * 16:
        return "", ""
    return parts[1], parts[2]
