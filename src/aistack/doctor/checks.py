"""`aistack doctor`: the runbook's verification steps against the configured stack.

What it checks, in order (docs/doctor.md):

- each backend's URL has the right form for its kind (no network needed);
- each backend answers (its model list, with latency); when it does not, a second look
  tells a wrong dialect (an OpenAI server configured as Ollama, a missing /v1) from a
  dead box;
- each declared model is on its backend (with `:latest` and OpenAI-style-id hints);
- each declared model answers a tiny prompt with non-empty content (with its time);
- every alias and routing fallback points at a model somebody serves;
- the embedded default model loads and answers;
- the database and Redis answer, when the config names them;
- the running gateway (at the config's address, or `--gateway URL`) answers in both
  dialects. When the config's own gateway runs, the embedded models are asked through
  it (it holds them loaded; a second copy here would only measure this process).

Every finding is PASS, WARN, FAIL or SKIP, with a one-line fix for anything not PASS.
A backend that fails a check is not asked the later ones: one problem, one finding.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from aistack.backends.base import Backend, BackendConfig
from aistack.backends.http import HttpConfig
from aistack.backends.transport import HttpClient
from aistack.config import Config
from aistack.core.chat import ChatRequest, EmbedRequest, Message, Sampling
from aistack.core.errors import ErrorKind, GatewayError
from aistack.core.events import collect
from aistack.core.models import ModelCard, canonical
from aistack.doctor import services
from aistack.doctor.findings import (
    Finding,
    Report,
    Status,
    failed,
    ms,
    passed,
    since,
    skipped,
    warned,
)
from aistack.doctor.urls import missing_model_fix, url_problem
from aistack.fleet.placement import resolve_alias

__all__ = ["Finding", "Options", "Report", "Status", "run"]


PromptScope = Literal["declared", "all", "none"]


@dataclass
class Options:
    prompts: PromptScope = "declared"
    prompt: str = "Reply with the single word OK."
    max_tokens: int = 128
    timeout: float = 120.0  # seconds per prompt (a big model may have to load first)
    gateway: str | None = None
    gateway_key: str | None = None
    embedded: bool = True
    # The gateway at `gateway` is the one this config describes (it answered there):
    # local backends' models are prompted through it.
    running: bool = False


def _url(c: BackendConfig) -> str | None:
    return c.url if isinstance(c, HttpConfig) else None


async def _dialect_hint(client: HttpClient, c: BackendConfig, url: str) -> tuple[str, str] | None:
    """When a backend answers, but not in its kind's dialect: what it is, and the fix."""
    url = url.rstrip("/")
    if c.kind == "ollama":
        r = await services.get(client, url + "/v1/models")
        if r is not None and r[0] == 200 and services.is_json_with(r[1], "data"):
            return (
                "no Ollama API at this URL, but an OpenAI API at /v1",
                f"kind: openai, url: {url}/v1",
            )
    elif c.kind == "openai":
        if not url.endswith("/v1"):
            r = await services.get(client, url + "/v1/models")
            if r is not None and r[0] == 200 and services.is_json_with(r[1], "data"):
                return ("the OpenAI base URL is missing /v1", f"url: {url}/v1")
        r = await services.get(client, url + "/api/version")
        if r is not None and r[0] == 200 and services.is_json_with(r[1], "version"):
            return (
                "this is an Ollama server's root, not an OpenAI base URL",
                f"url: {url}/v1 (Ollama's OpenAI layer), or kind: ollama with url: {url}",
            )
    return None


# -- per backend


async def _answers(b: Backend, card: ModelCard, opts: Options) -> Finding:
    target = f"{b.name}/{card.name}"
    t = time.monotonic()
    req = ChatRequest(
        model=card.name,
        messages=(Message(role="user", content=opts.prompt),),
        stream=False,
        sampling=Sampling(max_tokens=opts.max_tokens),
    )
    try:
        async with asyncio.timeout(opts.timeout):
            stream = await b.chat(req, card.name)
            try:
                whole = collect([c async for c in stream])
            finally:
                await stream.aclose()
    except TimeoutError:
        return failed(
            "answers",
            target,
            f"no answer within {opts.timeout:.0f} s",
            "check the backend's load and logs; a model this slow times apps out "
            "(raise --timeout if it is only loading)",
            since(t),
        )
    except GatewayError as e:
        if e.kind is ErrorKind.INVALID_REQUEST:
            return await _embeds(b, card, opts, t, chat_error=e.message)
        return failed(
            "answers",
            target,
            f"failed: {e.message}",
            "see the backend's logs; `aistack doctor --prompts none` skips this check",
            since(t),
        )
    text = whole.content.strip()
    took = since(t)
    if text:
        shown = text if len(text) <= 40 else text[:37] + "..."
        return passed("answers", target, f"answered {shown!r} in {ms(took)}", seconds=took)
    if whole.thinking.strip() or whole.tool_calls:
        what = "only reasoning" if whole.thinking.strip() else "only a tool call"
        return warned(
            "answers",
            target,
            f"answered {what}, no content, in {ms(took)}",
            "apps that read the text (Paperless-AI's check, Frigate) see an empty answer: "
            "give it more tokens or turn thinking off for them",
            took,
        )
    return failed(
        "answers",
        target,
        f"answered nothing (empty content) in {ms(took)}",
        "try the model by hand (ollama run / curl); it may be broken or mis-templated",
        took,
    )


async def _embeds(b: Backend, card: ModelCard, opts: Options, t: float, chat_error: str) -> Finding:
    target = f"{b.name}/{card.name}"
    try:
        async with asyncio.timeout(opts.timeout):
            r = await b.embed(EmbedRequest(model=card.name, inputs=("ok",)), card.name)
    except (GatewayError, TimeoutError) as e:
        msg = e.message if isinstance(e, GatewayError) else "timed out"
        return failed(
            "answers",
            target,
            f"chat failed ({chat_error}); embed failed: {msg}",
            "see the backend's logs",
            since(t),
        )
    took = since(t)
    dims = len(r.embeddings[0]) if r.embeddings else 0
    if not dims:
        return failed(
            "answers", target, "embedding model answered no vector", "see the backend's logs", took
        )
    return passed(
        "answers", target, f"embedding model: {dims} dimensions in {ms(took)}", seconds=took
    )


async def _backend(
    b: Backend,
    c: BackendConfig,
    index: int,
    client: HttpClient,
    opts: Options,
    seen: dict[str, set[str]],
) -> list[Finding]:
    out: list[Finding] = []
    url = _url(c)
    if url:
        p = url_problem(c.kind, url)
        if p is not None:
            return [failed("url", b.name, p.detail, p.fix)]
    cards: list[ModelCard] = []
    if not c.discover:
        out.append(
            skipped("reachable", b.name, "discover: false, so its model list is not asked for")
        )
    else:
        t = time.monotonic()
        try:
            cards = await b.list_models()
        except GatewayError as e:
            took = since(t)
            hint = (
                await _dialect_hint(client, c, url)
                if url and e.kind is not ErrorKind.UPSTREAM_UNREACHABLE
                else None
            )
            if hint is not None:
                return [failed("url", b.name, hint[0], hint[1], took)]
            where = f"backends[{index}].url" if url else "the backend"
            fix = (
                f"start it, or correct {where} ({url})"
                if e.kind in (ErrorKind.UPSTREAM_UNREACHABLE, ErrorKind.UPSTREAM_TIMEOUT)
                else "see the error; check the url, kind and api_key"
            )
            return [failed("reachable", b.name, e.message, fix, took)]
        took = since(t)
        n = len(cards)
        out.append(
            passed(
                "reachable",
                b.name,
                f"{n} model{'s' if n != 1 else ''} listed in {ms(took)}",
                seconds=took,
            )
        )
    have = {canonical(x.name): x for x in cards}
    seen[b.name] = set(have)
    to_prompt: list[ModelCard] = []
    for m in c.models:
        if not c.discover:
            to_prompt.append(ModelCard(name=m, backend=b.name))
            continue
        card = have.get(canonical(m))
        if card is None:
            detail, fix = missing_model_fix(c.kind, b.name, m, [x.name for x in cards])
            out.append(failed("declared", f"{b.name}/{m}", detail, fix))
        else:
            out.append(passed("declared", f"{b.name}/{m}", "present"))
            to_prompt.append(card)
    if opts.prompts == "all" or (b.kind == "local" and not c.models):
        listed = {canonical(x.name) for x in to_prompt}
        to_prompt += [x for x in cards if canonical(x.name) not in listed]
    if opts.prompts != "none":
        asked = b
        if to_prompt and b.kind == "local":
            if opts.running and opts.gateway:
                asked = _through(b.name, opts.gateway, opts.gateway_key, client)
            else:
                await b.start()
        out += [await _answers(asked, card, opts) for card in to_prompt]
    return out


def _through(name: str, url: str, key: str | None, client: HttpClient) -> Backend:
    """The running gateway as an Ollama backend named `name`: its embedded model, asked
    where it is loaded."""
    from aistack.backends.http import HttpConfig
    from aistack.backends.registry import build

    (b,) = build([HttpConfig(name=name, kind="ollama", url=url, api_key=key)], client)
    return b


# -- aliases, the embedded default, database, Redis, the gateway


def _names(cfg: Config, seen: dict[str, set[str]]) -> list[Finding]:
    """Every alias, and every routing fallback, points at a model somebody serves."""
    declared = {b.name: {canonical(m) for m in b.models} for b in cfg.backends}
    undiscovered = {b.name for b in cfg.backends if not b.discover}

    def served(check: str, label: str, name: str, fix_key: str) -> Finding:
        target = resolve_alias(name, cfg.aliases)
        key = canonical(target)
        arrow = f"-> {target}" if canonical(name) != key else f"'{name}'"
        have = [n for n, names in seen.items() if key in names]
        promised = [n for n, names in declared.items() if key in names]
        trusted = [n for n in promised if n in undiscovered]  # declared, not listable
        if have or trusted:
            return passed(check, label, f"{arrow} on {', '.join(have or trusted)}")
        if promised:
            where = ", ".join(promised)
            return skipped(check, label, f"{arrow}, declared on {where}, not served (see above)")
        return failed(
            check,
            label,
            f"{arrow}, which no backend has",
            f"pull '{target}' onto a backend and declare it there, or fix {fix_key}",
        )

    out = [served("alias", a, a, f"aliases.{a}") for a in cfg.aliases]
    for model, r in cfg.routing.models.items():
        for field in ("fallbacks", "context_fallbacks"):
            for i, f in enumerate(getattr(r, field)):
                key = f"routing.models.{model}.{field}[{i}]"
                out.append(served("fallback", f"{model} -> {f}", f, key))
    return out


async def _embedded(cfg: Config, opts: Options) -> list[Finding]:
    if any(b.kind == "local" for b in cfg.backends):
        return []  # the configured local backend was checked with the others
    if opts.running:
        return []  # the running gateway is what serves; its config has no local model
    from aistack.backends.local import DEFAULT_MODEL, LocalBackend, engine_available

    if not engine_available():
        return [
            skipped(
                "embedded",
                DEFAULT_MODEL,
                "the embedded engine is not installed (the fallback when no config is given)",
                "pip install 'aistack[local]' to have it",
            )
        ]
    if opts.prompts == "none":
        return [passed("embedded", DEFAULT_MODEL, "installed")]
    b = LocalBackend("embedded", n_threads=2)
    try:
        await b.start()
        f = await _answers(b, (await b.list_models())[0], opts)
    finally:
        await b.close()
    f.check, f.target = "embedded", DEFAULT_MODEL
    return [f]


# -- the whole run


async def run(
    cfg: Config,
    source: str,
    backends: Sequence[Backend],
    opts: Options | None = None,
    base_dir: Path | None = None,
) -> Report:
    opts = opts or Options()
    report = Report(source)
    if opts.gateway:
        how = (
            "running: inspected it (its embedded models are asked through it)"
            if opts.running
            else "checked as given by --gateway"
        )
        report.findings.append(passed("inspected", opts.gateway, how))
    n_b, n_a = len(cfg.backends), len(cfg.aliases)
    report.findings.append(
        passed(
            "config",
            source,
            f"{n_b} backend{'s' if n_b != 1 else ''}, {n_a} alias{'es' if n_a != 1 else ''}",
        )
    )
    by_name = {b.name: b for b in backends}
    client = HttpClient()
    seen: dict[str, set[str]] = {}
    try:
        per_backend = await asyncio.gather(
            *(
                _backend(by_name[c.name], c, i, client, opts, seen)
                for i, c in enumerate(cfg.backends)
            )
        )
        for findings in per_backend:
            report.findings += findings
        report.findings += _names(cfg, seen)
        if opts.embedded:
            report.findings += await _embedded(cfg, opts)
        report.findings += await services.database(cfg, base_dir)
        report.findings += await services.redis(cfg)
        if opts.gateway:
            report.findings += await services.gateway(client, opts.gateway, opts.gateway_key)
    finally:
        await client.aclose()
    return report
