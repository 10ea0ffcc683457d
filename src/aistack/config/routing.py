"""The `routing:` section: strategies, retries, waiting, cooldowns, probes, and each
model's deployments, fallbacks and request defaults (docs/routing.md)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from aistack.config.base import Strict

Strategy = Literal["least-in-flight", "latency", "weighted", "priority"]


class DeploymentConfig(Strict):
    """One backend's deployment of one model; unset keys come from the backend."""

    weight: float | None = None
    priority: int | None = None
    max_in_flight: int | None = None


class ModelDefaults(Strict):
    """Request fields the gateway sets for a model when the client did not (docs/routing.md)."""

    keep_alive: float | str | None = None
    think: bool | Literal["low", "medium", "high", "max"] | None = None
    # A system message for requests without one; with `force`, put before the client's.
    system: str | None = None
    num_ctx: int | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repeat_penalty: float | None = None
    # Other backend options (Ollama's num_batch, num_gpu, ...), passed through.
    options: dict[str, Any] = msgspec.field(default_factory=dict)


class ModelRoutingConfig(Strict):
    """How one public name (a model or an alias) is routed."""

    strategy: Strategy | None = None
    # Tried in order when every deployment of the model failed or is unavailable.
    fallbacks: list[str] = msgspec.field(default_factory=list)
    # Tried in order when the prompt is longer than the model's context.
    context_fallbacks: list[str] = msgspec.field(default_factory=list)
    # Per backend: weight, priority, max_in_flight of this model there.
    deployments: dict[str, DeploymentConfig] = msgspec.field(default_factory=dict)
    # Waiting when every deployment is busy: how many requests may wait, and how long
    # each waits at most (unset: routing.queue_depth, routing.queue_timeout).
    queue_depth: int | None = None
    queue_timeout: float | None = None
    # Send the turns of one conversation to the same instance while it can take them
    # (its prompt cache is reused): by the X-Aistack-Session header, else a hash of the
    # key and the conversation's first messages.
    sticky: bool = False
    # Request fields filled in when the client left them out; `force`: always.
    defaults: ModelDefaults | None = None
    force: bool = False


class CooldownConfig(Strict):
    # Consecutive failures (unreachable, timeout, 5xx) that take a deployment out.
    failures: int = 3
    # How long it stays out before one trial request (half-open); doubles while the
    # trials fail, up to max_seconds. A 429 takes it out for its Retry-After instead.
    seconds: float = 10.0
    max_seconds: float = 300.0


class HealthConfig(Strict):
    # Seconds between background probes of each backend (0: no probes). A backend that
    # is down is probed every min(interval, 5) seconds so it comes back quickly.
    interval: float = 30.0
    timeout: float = 5.0


class RoutingConfig(Strict):
    strategy: Strategy = "least-in-flight"
    # Extra attempts per chain entry after a failure before the first byte.
    retries: int = 2
    # Jittered exponential backoff before trying the same deployment again (seconds).
    backoff: float = 0.25
    backoff_max: float = 2.0
    # Waiting when every deployment that could answer is busy (at its max_in_flight,
    # answering 429/503, or its GPU taken by another model): how long a request waits at
    # most before a 503, and how many may wait per model (more get a 503 at once).
    queue_timeout: float = 30.0
    queue_depth: int = 100
    # A loaded model keeps its GPU against a switch to another model until it has had no
    # request for this long, or the request for the other model has waited this long
    # (the starvation bound). Only where the GPU's memory is known (vram, or learned).
    switch_after: float = 5.0
    cooldown: CooldownConfig = msgspec.field(default_factory=CooldownConfig)
    health: HealthConfig = msgspec.field(default_factory=HealthConfig)
    models: dict[str, ModelRoutingConfig] = msgspec.field(default_factory=dict)
