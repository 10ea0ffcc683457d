"""What a backend is: a small required core, the model calls it may make, the fleet
verbs it may have, and how a kind declares its config and is built.

A backend turns a core request into a stream of core chunks. Awaiting `chat` or
`generate` sends the request and waits for the backend to accept it, so every failure
before the first byte (unreachable, 404, 429, timeout) raises here, where it can still
be retried elsewhere or shown with a real status. The stream it returns yields chunks;
the last has `finish` set; a failure mid-stream raises a `GatewayError` from the
iterator, never a silent end.

A kind lives in one module (backends/ollama.py, ...): its config schema (a
`BackendConfig` subclass, which validates its own keys), its class, and `KIND`, which
backends/registry.py lists. See docs/architecture.md, "Add a backend kind".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Generic, Literal, Protocol, TypeVar, runtime_checkable

import msgspec

from aistack.core.chat import ChatRequest, EmbedRequest, EmbedResult, GenerateRequest
from aistack.core.errors import ErrorKind, GatewayError, invalid
from aistack.core.events import Chunk
from aistack.core.fleet import PullProgress
from aistack.core.models import LoadedModel, ModelCard, ModelShow

if TYPE_CHECKING:
    from aistack.backends.transport import HttpClient, Response


class ChunkStream:
    """The chunks of one answer, and the connection they come from.

    `aclose()` always releases the connection, even if iteration never started (an
    async generator that never ran would not run its `finally`).
    """

    __slots__ = ("_closer", "_it")

    def __init__(self, it: AsyncIterator[Chunk], closer: Response | None = None) -> None:
        self._it = it
        self._closer = closer

    def __aiter__(self) -> ChunkStream:
        return self

    async def __anext__(self) -> Chunk:
        return await self._it.__anext__()

    async def aclose(self) -> None:
        try:
            aclose = getattr(self._it, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            if self._closer is not None:
                self._closer.close()


class Backend(ABC):
    """A machine (or library) that runs models: the required core is a name, a kind and
    what it has (`list_models`). Each model call it cannot make answers a clear 400
    naming the backend, not a backend error; a kind overrides the calls it makes."""

    kind: ClassVar[str] = ""
    # Whether `probe` asks something over the network (the health monitor skips the rest).
    probes: ClassVar[bool] = False
    # Why it has no model store (pull, delete, copy), in words an operator can act on.
    unmanaged_reason: ClassVar[str] = "it has no model store aistack can manage"

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    async def list_models(self) -> list[ModelCard]:
        """What the backend has now (pulled, served or loaded)."""

    async def start(self) -> None:  # noqa: B027  # optional hook
        """Called once when the gateway starts; must not block on slow backends."""

    async def close(self) -> None:  # noqa: B027  # optional hook
        """Release connections, threads and models."""

    async def probe(self) -> None:  # noqa: B027  # optional hook
        """A cheap liveness check; raises a `GatewayError` when the backend is not serving."""

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "kind": self.kind}

    # -- model calls

    async def chat(self, req: ChatRequest, model: str) -> ChunkStream:
        raise self.cannot("chat")

    async def generate(self, req: GenerateRequest, model: str) -> ChunkStream:
        """A prompt: by default the templated form as a one-turn chat (the backend
        applies its template); a raw prompt needs a kind that takes one."""
        if req.raw:
            raise self.cannot("run a raw prompt")
        return await self.chat(req.as_chat(), model)

    async def embed(self, req: EmbedRequest, model: str) -> EmbedResult:
        raise invalid(f'"{req.model}" does not support embeddings')

    async def show(self, card: ModelCard) -> ModelShow:
        """A model's details; by default what the catalog knows."""
        arch = "unknown"
        info: dict[str, object] = {"general.architecture": arch, "general.basename": card.name}
        if card.context_length:
            info[f"{arch}.context_length"] = card.context_length
        return ModelShow(
            card=card, model_info=info, capabilities=card.capabilities or ("completion", "tools")
        )

    def cannot(self, verb: str) -> GatewayError:
        why = f": {self.unmanaged_reason}" if verb in ("pull", "delete", "copy") else ""
        what = f"{verb} models" if why else verb
        return GatewayError(
            ErrorKind.INVALID_REQUEST,
            f"backend '{self.name}' ({self.kind}) cannot {what}{why}",
            backend=self.name,
        )


# -- the fleet verbs: protocols a backend implements or not


@runtime_checkable
class ModelStore(Protocol):
    """A backend with a model store aistack can manage (Ollama): pull, delete, copy."""

    name: str

    def pull(self, model: str, *, insecure: bool = False) -> AsyncIterator[PullProgress]:
        """Download a model: progress items, the last one `success`. A refusal (unknown
        model, unreachable backend) raises from the first step, before any progress."""
        ...

    async def delete(self, model: str) -> None: ...

    async def copy(self, source: str, destination: str) -> None: ...


@runtime_checkable
class LoadedModels(Protocol):
    """A backend that says which models it holds in memory, and until when (ps)."""

    async def ps(self) -> list[LoadedModel]: ...


@runtime_checkable
class ModelMemory(Protocol):
    """A backend that loads and unloads models when asked (Ollama's empty request, with
    `keep_alive: 0` to unload): what scheduling, preloading and GPU sharing call."""

    async def load(self, model: str, keep_alive: float | str | None = None) -> None: ...

    async def unload(self, model: str) -> None: ...


def manages_models(b: Backend) -> bool:
    return isinstance(b, ModelStore)


def store_of(b: Backend, verb: str) -> ModelStore:
    """`b` as a model store, or the 400 that says why it is not one."""
    if not isinstance(b, ModelStore):
        raise b.cannot(verb)
    return b


async def loaded_models(b: Backend) -> list[LoadedModel]:
    """What `b` has loaded; nothing for a backend that does not say."""
    return await b.ps() if isinstance(b, LoadedModels) else []


# -- a kind: its config schema and how it is built


class BackendConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What every backend's entry in the config says, whatever its kind; a kind's
    schema adds its own keys (`HttpConfig`: url, api_key, ...)."""

    name: str
    kind: str
    # Models this backend should have: listed even when it is down, and the desired
    # state for `aistack models sync`.
    models: list[str] = msgspec.field(default_factory=list)
    # Ask the backend what it has (OpenRouter lists hundreds; say false and declare).
    discover: bool = True
    # Routing defaults for every model this backend serves (routing.models can override
    # them per model): a share for `weighted`, a rank for `priority` (lower goes first),
    # and how many requests one model here may have in flight (null: no cap).
    weight: float = 1.0
    priority: int = 0
    max_in_flight: int | None = None
    # How its requests are costed when no price matches: "local" at 0, "metered" as
    # unknown. Default: the kind's (`BILLING`).
    billing: Literal["local", "metered"] | None = None
    # Backends on one GPU name the same group: they share its memory (`vram`), and
    # GPU sharing takes turns between them (docs/routing.md, docs/images.md).
    gpu: str | None = None

    BILLING: ClassVar[str] = "local"

    @property
    def billed_as(self) -> str:
        return self.billing or self.BILLING

    def problems(self) -> Iterator[tuple[str, str]]:
        """The kind's own checks of its keys: (key, problem) pairs."""
        return iter(())


C = TypeVar("C", bound=BackendConfig)


@dataclass(frozen=True, slots=True)
class Kind(Generic[C]):
    """A backend kind: its name in the config, its schema, and how to build one."""

    name: str
    config: type[C]
    build: Callable[[C, HttpClient], Backend]


class _One:
    """An iterator over one chunk, without the cost of an async generator."""

    __slots__ = ("_chunk",)

    def __init__(self, chunk: Chunk) -> None:
        self._chunk: Chunk | None = chunk

    def __aiter__(self) -> _One:
        return self

    async def __anext__(self) -> Chunk:
        c = self._chunk
        if c is None:
            raise StopAsyncIteration
        self._chunk = None
        return c


def single(chunk: Chunk) -> ChunkStream:
    """A stream of one chunk (a non-streamed answer)."""
    return ChunkStream(_One(chunk))
