"""Metrics, traces and request logs: observers of finished requests, off the request path."""

from __future__ import annotations

import os
from collections.abc import Mapping

from aistack.config import Config, WorkerRole
from aistack.observability.content import ContentLog
from aistack.observability.gateway_metrics import GatewayMetrics
from aistack.observability.logs import RequestLog
from aistack.observability.tracing import Tracer, settings_from_env
from aistack.service import Gateway


class Observability:
    """What the config turned on, registered with the gateway as observers and components."""

    def __init__(
        self,
        cfg: Config,
        gw: Gateway,
        env: Mapping[str, str] | None = None,
        role: WorkerRole | None = None,
    ) -> None:
        env = os.environ if env is None else env
        self.tracer: Tracer | None = None
        if cfg.tracing.enabled:
            lf = cfg.tracing.langfuse
            settings = settings_from_env(
                env,
                capture_content=cfg.tracing.capture_content,
                langfuse_host=lf.host if lf else None,
                langfuse_public_key=lf.public_key if lf else None,
                langfuse_secret_key=lf.secret_key if lf else None,
            )
            if settings is not None:
                self.tracer = Tracer(settings, gw.client)
        self.metrics = GatewayMetrics(gw, self.tracer, role) if cfg.metrics.enabled else None
        self.metrics_auth = cfg.metrics.auth
        self.request_log = RequestLog(fmt=cfg.logging.format) if cfg.logging.requests else None
        # Prompts and answers kept per request: for the spans, and for the console's
        # request detail (which needs no trace receiver).
        self.capture = cfg.tracing.enabled and cfg.tracing.capture_content
        self.contents = ContentLog() if self.capture else None
        self._ps_interval = cfg.metrics.ps_interval
        for observer in (self.metrics, self.request_log, self.tracer, self.contents):
            if observer is not None:
                gw.observers.append(observer.observe)
        gw.components.append(self)

    async def start(self) -> None:
        if self.metrics is not None:
            await self.metrics.start(self._ps_interval)
        if self.tracer is not None:
            await self.tracer.start()

    async def close(self) -> None:
        if self.metrics is not None:
            await self.metrics.close()
        if self.tracer is not None:
            await self.tracer.close()
        if self.request_log is not None:
            self.request_log.flush(everything=True)


__all__ = ["ContentLog", "GatewayMetrics", "Observability", "RequestLog", "Tracer"]
