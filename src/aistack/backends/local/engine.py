"""The embedded engine's one worker thread, fed by a queue of jobs.

llama.cpp is not thread-safe per model and releases the GIL while it computes, so every
call that touches a model runs here, one at a time, and the event loop keeps serving;
what a job makes comes back to the loop with `call_soon_threadsafe`, and a caller that
goes away sets the job's cancel flag, which generation checks per token.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aistack.core.errors import ErrorKind, GatewayError
from aistack.core.events import Chunk

log = logging.getLogger("aistack.local")

SENTINEL = object()
CLOSE_WAIT = 60.0  # seconds close() waits for the engine's call in hand to stop


_ABORT_CALLBACK: list[Any] = []  # the cast strlen, made once and kept alive


def abort_callback() -> Any:
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


@dataclass
class Job:
    fn: Callable[[Job], None]
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[object]
    cancel: threading.Event

    def emit(self, item: object) -> None:
        self.loop.call_soon_threadsafe(self.out.put_nowait, item)


class Engine:
    """The worker thread and its queue. `on_exit` runs on the thread as it ends (it
    frees the models there, with nothing running on them)."""

    def __init__(self, name: str, on_exit: Callable[[], None]) -> None:
        self.name = name
        self._on_exit = on_exit
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # Observable: whether a job is running.
        self.busy = False
        # Shutdown: the job running now (stopped at its next step), no new ones, and
        # the flag llama.cpp's abort callback reads (see Models.abortable).
        self._current: Job | None = None
        self._closing = False
        self.abort = ctypes.create_string_buffer(2)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name=f"llama-{self.name}", daemon=True)
        self._thread.start()

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
        self.abort[0] = b"\x01"  # a decode under way stops at its graph's next node
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
                self._on_exit()
                return
            if job.cancel.is_set() or self._closing:
                if not job.cancel.is_set():
                    job.emit(GatewayError(ErrorKind.SERVER_CUT, "the embedded engine is stopping"))
                job.emit(SENTINEL)
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
            job.emit(SENTINEL)

    def submit_nowait(self, fn: Callable[[Job], None]) -> Job:
        loop = asyncio.get_running_loop()
        job = Job(fn=fn, loop=loop, out=asyncio.Queue(), cancel=threading.Event())
        self._jobs.put(job)
        return job

    async def results(self, job: Job) -> AsyncIterator[object]:
        try:
            while True:
                item = await job.out.get()
                if item is SENTINEL:
                    return
                if isinstance(item, GatewayError):
                    raise item
                yield item
        finally:
            job.cancel.set()

    async def call(self, fn: Callable[[Job], object]) -> Any:
        """Run fn on the worker and return its one result."""

        def run(job: Job) -> None:
            job.emit(fn(job))

        job = self.submit_nowait(run)
        result: object = None
        async for item in self.results(job):
            result = item
        return result


async def one(chunk: Chunk) -> AsyncIterator[Chunk]:
    yield chunk


async def chunks(it: AsyncIterator[object]) -> AsyncIterator[Chunk]:
    try:
        async for item in it:
            if isinstance(item, Chunk):
                yield item
    finally:
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()
