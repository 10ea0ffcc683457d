"""Image generation in the hub's terms: the request, a job's life, and what it made.

An image request is decoded from the caller's dialect (OpenAI's images API) into an
`ImageRequest`; a job carries it through the queue. A job's state only moves along
`TRANSITIONS`, so every place that changes one (the runner, a cancel, a restart's
reconciliation, a replica taking over) agrees on what may follow what:

    queued -> submitted -> running -> succeeded
       \\          \\           \\----> failed | cancelled
        \\          \\-> queued (its backend went away before it ran: another one may)
         \\-> cancelled | failed

`submitted` means the backend has the prompt in its own queue; callers see it as
`queued` (with no position in ours).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

JobState = Literal["queued", "submitted", "running", "succeeded", "failed", "cancelled"]

ACTIVE: frozenset[str] = frozenset({"queued", "submitted", "running"})
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})

TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"submitted", "cancelled", "failed"}),
    "submitted": frozenset({"running", "succeeded", "failed", "cancelled", "queued"}),
    "running": frozenset({"succeeded", "failed", "cancelled", "queued"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}


def can_move(src: str, dst: str) -> bool:
    return dst in TRANSITIONS.get(src, frozenset())


def public_state(state: str) -> str:
    """What callers see: a prompt waiting in the backend's queue is still queued."""
    return "queued" if state == "submitted" else state


class InputImage(msgspec.Struct, frozen=True, kw_only=True):
    """An image the caller sent (edits): bytes and the name it came with."""

    data: bytes
    filename: str = "input.png"
    mime: str = "image/png"


class ImageRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What to make. Unset knobs (None) leave the workflow's own values."""

    model: str
    prompt: str
    negative_prompt: str = ""
    n: int = 1
    width: int | None = None  # None: the workflow's own size
    height: int | None = None
    seed: int | None = None
    steps: int | None = None
    cfg: float | None = None
    quality: str = ""
    style: str = ""
    response_format: Literal["b64_json", "url"] = "b64_json"
    user: str = ""
    image: InputImage | None = None  # edits: the image to start from

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}" if self.width and self.height else "auto"

    def params(self) -> dict[str, Any]:
        """The JSON a job keeps of its request (the input image is kept by name only)."""
        out: dict[str, Any] = {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "n": self.n,
            "width": self.width,
            "height": self.height,
            "seed": self.seed,
            "steps": self.steps,
            "cfg": self.cfg,
            "quality": self.quality,
            "style": self.style,
            "response_format": self.response_format,
            "user": self.user,
        }
        return out

    @classmethod
    def from_params(cls, model: str, p: dict[str, Any]) -> ImageRequest:
        known = {k: p[k] for k in _PARAM_KEYS if k in p}
        return msgspec.convert({"model": model, **known}, cls)


_PARAM_KEYS = (
    "prompt", "negative_prompt", "n", "width", "height", "seed", "steps", "cfg", "quality",
    "style", "response_format", "user",
)  # fmt: skip


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    """How far a running job is: a sampler's step out of its steps, and on which node."""

    value: int = 0
    max: int = 0
    node: str = ""

    @property
    def fraction(self) -> float:
        return round(self.value / self.max, 4) if self.max else 0.0


class ImageEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One thing a backend said about a prompt (from ComfyUI's WebSocket messages).

    kind: started (execution began), node (a node began executing), progress (a
    sampler step), done (nothing left to run: read the outputs), error, interrupted.
    """

    kind: Literal["started", "node", "progress", "done", "error", "interrupted"]
    prompt_id: str
    node: str = ""
    value: int = 0
    max: int = 0
    message: str = ""


class OutputRef(msgspec.Struct, frozen=True, kw_only=True):
    """An image a backend made, as it names it (ComfyUI: filename, subfolder, type)."""

    filename: str
    subfolder: str = ""
    type: str = "output"
    node: str = ""
