"""One prompt through the embedded model, on the worker thread: checked, bounded by the
context, generated token by token (stopped when the caller goes away), and, for a JSON
format or a tool call, held back until it is known good.

llama.cpp takes bad input badly: an empty token list fails `llama_decode` (and left the
process to crash at exit). So generation is bounded by the context, and a prompt is
known to be too long from its size before it is tokenized when that is certain.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from aistack.backends.local.engine import Job
from aistack.backends.local.grammar import grammar, matches
from aistack.backends.local.models import Models
from aistack.backends.local.prompts import sampling_kwargs
from aistack.core.chat import ChatRequest, GenerateRequest, ToolCall
from aistack.core.errors import ErrorKind, GatewayError, invalid
from aistack.core.events import Chunk, FinishReason, Timings, Usage

log = logging.getLogger("aistack.local")

# Tries at a JSON answer that does not parse (a grammar that lets it through): the
# caller's schema decides what the grammar admits, so after these it is a 400.
_JSON_TRIES = 3


@dataclass
class _Plan:
    """What a prompt's generation is to be, decided before the model runs."""

    tokens: list[int]
    max_tokens: int
    grammar: Any
    schema: dict[str, Any] | str | None
    where: str  # the field a schema came from, for its errors
    json_mode: bool  # a JSON format: checked before it is answered
    held: bool  # pieces kept back until the answer is complete


@dataclass
class _Draw:
    """One generation's result."""

    text: list[str] = field(default_factory=list)
    first: int | None = None  # when its first token came (monotonic ns)
    produced: int = 0
    finish: FinishReason = "stop"


def run_prompt(
    job: Job,
    models: Models,
    prompt: str,
    req: ChatRequest | GenerateRequest,
    schema: dict[str, Any] | str | None,
    mode: str | None,
) -> None:
    t0 = time.monotonic_ns()
    llm = models.load()
    t_loaded = time.monotonic_ns()
    plan = _plan(models, llm, prompt, req, schema, mode)
    draw = _answer(job, models, llm, plan, req)
    if draw is None:
        return
    if plan.json_mode and plan.held and draw.text:
        job.emit(Chunk(content="".join(draw.text)))
    end = time.monotonic_ns()
    calls: tuple[ToolCall, ...] = ()
    finish = draw.finish
    if mode == "tool":
        raw = "".join(draw.text)
        calls = _tool_call(raw)
        if calls:
            finish = "tool_calls"
        else:
            job.emit(Chunk(content=raw))
    first = draw.first or end
    job.emit(
        Chunk(
            tool_calls=calls,
            finish=finish,
            usage=Usage(prompt_tokens=len(plan.tokens), completion_tokens=draw.produced),
            timings=Timings(
                total_ns=end - t0,
                load_ns=max(1, t_loaded - t0),
                prompt_eval_ns=max(1, first - t_loaded),
                eval_ns=max(1, end - first),
            ),
            model=models.model_name,
        )
    )


def _plan(
    models: Models,
    llm: Any,
    prompt: str,
    req: ChatRequest | GenerateRequest,
    schema: dict[str, Any] | str | None,
    mode: str | None,
) -> _Plan:
    """The request checked (max_tokens, the schema, the prompt's length) and bounded."""
    s = req.sampling
    if s.max_tokens == 0:
        name = "options.num_predict" if req.extra_dialect == "ollama" else "max_tokens"
        raise invalid(
            f"invalid value for '{name}': 0 asks for an answer of no tokens; "
            "it must be at least 1 (or negative for no limit)",
            name,
        )
    where = "tools" if mode == "tool" else (req.format.path if req.format else "format")
    constraint = grammar(llm, schema, where)
    tokens = prompt_tokens(models, llm, prompt)
    budget = models.n_ctx - len(tokens)
    if budget <= 0:
        raise too_long(str(len(tokens)), models.n_ctx)
    # Never more than fits: no limit (None, or Ollama's -1 and -2) is the rest of the
    # context, and a huge one is clamped to it.
    max_tokens = budget if s.max_tokens is None or s.max_tokens < 0 else min(s.max_tokens, budget)
    # A JSON format is held back until it is known to parse, unless it is streamed.
    json_mode = mode is None and schema is not None
    held = mode == "tool" or (json_mode and not req.stream)
    return _Plan(tokens, max_tokens, constraint, schema, where, json_mode, held)


def _answer(
    job: Job, models: Models, llm: Any, plan: _Plan, req: ChatRequest | GenerateRequest
) -> _Draw | None:
    """The answer, drawn again while a JSON answer that ended does not parse; None when
    the caller went away."""
    kwargs = sampling_kwargs(req.sampling)
    tries = _JSON_TRIES if plan.json_mode and not req.stream else 1
    for attempt in range(tries):
        if attempt:
            # Another draw: the same seed would give the same answer.
            kwargs["seed"] = (kwargs.get("seed", 0) + attempt * 7919) & 0xFFFFFFFF
        draw = _draw(job, models, llm, plan, kwargs)
        if draw is None:
            return None
        # A JSON answer cut by max_tokens is the caller's "length"; one that ended
        # and does not parse is never answered as a success.
        if (
            not plan.json_mode
            or draw.finish == "length"
            or matches("".join(draw.text), plan.schema)
        ):
            return draw
        log.warning("the embedded engine's JSON did not parse (try %d)", attempt + 1)
    raise GatewayError(
        ErrorKind.INVALID_REQUEST,
        f"the embedded engine could not produce valid JSON for the schema in "
        f"'{plan.where}' ({tries} tries): its grammar cannot keep every part of this "
        "schema (a pattern's character classes) within JSON",
        param=plan.where,
        code="invalid_json_output",
    )


def _draw(job: Job, models: Models, llm: Any, plan: _Plan, kwargs: dict[str, Any]) -> _Draw | None:
    """One generation, its pieces sent as they come unless held; None when the caller
    went away (checked per token)."""
    stream = llm.create_completion(
        plan.tokens, max_tokens=plan.max_tokens, stream=True, grammar=plan.grammar, **kwargs
    )
    draw = _Draw()
    try:
        for part in stream:
            if job.cancel.is_set():
                log.info("generation stopped: the caller went away")
                return None
            choice = part["choices"][0]
            piece = choice.get("text") or ""
            if piece or choice.get("finish_reason") is None:
                draw.produced += 1
                models.tokens_generated += 1
            if draw.first is None:
                draw.first = time.monotonic_ns()
            if piece:
                if plan.held or plan.json_mode:
                    draw.text.append(piece)
                if not plan.held:
                    job.emit(Chunk(content=piece))
            if choice.get("finish_reason") == "length":
                draw.finish = "length"
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    return draw


def _tool_call(raw: str) -> tuple[ToolCall, ...]:
    """The one tool call a tool-constrained answer makes, or none when it does not parse."""
    try:
        obj = orjson.loads(raw)
        return (
            ToolCall(
                name=str(obj["name"]),
                arguments=obj.get("arguments") or {},
                id="call_" + os.urandom(6).hex(),
            ),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return ()


def prompt_tokens(models: Models, llm: Any, prompt: str) -> list[int]:
    """The prompt's tokens; too long for the context is known from its size first.

    Every token stands for at least one byte and at most the longest token's, so a
    prompt of B bytes has at least B / longest tokens: a 20 MB prompt is refused
    without tokenizing it (seconds on the engine's one thread)."""
    data = prompt.encode()
    if len(data) > models.n_ctx:
        longest = models.longest_token(llm)
        if len(data) > models.n_ctx * longest:
            raise too_long(f"at least {len(data) // longest}", models.n_ctx)
    tokens: list[int] = llm.tokenize(data, add_bos=False, special=True)
    if not tokens:
        # An empty raw prompt (OpenAI's completions take one): the model begins from
        # the start of a text. llama.cpp fails to decode no tokens at all.
        bos = llm.token_bos()
        if bos < 0:
            raise invalid("the prompt is empty", "prompt")
        tokens = [bos]
    return tokens


def too_long(tokens: str, n_ctx: int) -> GatewayError:
    return GatewayError(
        ErrorKind.INVALID_REQUEST,
        f"the input length ({tokens} tokens) exceeds the context length ({n_ctx} tokens)",
        code="context_length_exceeded",
    )
