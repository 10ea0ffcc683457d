"""Backends from configuration: one constructor per kind, all through the same table."""

from __future__ import annotations

from collections.abc import Callable

from aistack.backends.base import Backend, HttpSettings
from aistack.backends.ollama import OllamaBackend
from aistack.backends.openai_compat import OpenAIBackend
from aistack.backends.transport import HttpClient, Timeouts, parse_url
from aistack.config import BackendConfig, ConfigError

Factory = Callable[[BackendConfig, HttpClient], Backend]


def _http_settings(c: BackendConfig) -> HttpSettings:
    t = c.timeouts
    assert c.url is not None
    return HttpSettings(
        url=c.url.rstrip("/"),
        api_key=c.api_key or None,
        headers=tuple(c.headers.items()),
        timeouts=Timeouts(connect=t.connect, first_byte=t.first_token, idle=t.idle, total=t.total),
    )


def _ollama(c: BackendConfig, client: HttpClient) -> Backend:
    s = _http_settings(c)
    return OllamaBackend(c.name, parse_url(s.url), client, s)


def _openai(c: BackendConfig, client: HttpClient) -> Backend:
    s = _http_settings(c)
    return OpenAIBackend(c.name, parse_url(s.url), client, s, sampling_extras=c.sampling_extras)


def _local(c: BackendConfig, client: HttpClient) -> Backend:
    from aistack.backends.local import DEFAULT_MODEL, LocalBackend

    try:
        return LocalBackend(
            c.name,
            model_path=c.model_path,
            model_name=c.model_name or DEFAULT_MODEL,
            n_ctx=c.n_ctx,
            n_threads=c.n_threads,
            keep_alive=c.keep_alive,
        )
    except RuntimeError as e:
        raise ConfigError(f"backend '{c.name}': {e}") from None


KINDS: dict[str, Factory] = {"ollama": _ollama, "openai": _openai, "local": _local}


def build(configs: list[BackendConfig], client: HttpClient) -> list[Backend]:
    return [KINDS[c.kind](c, client) for c in configs]
