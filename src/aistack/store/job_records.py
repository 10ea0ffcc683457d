"""The image queue's rows as values: jobs, their files, prompt presets, and how a row of
each reads from and is written to SQL (the statements are store/jobs.py's)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: str
    created_at: int  # ms since the epoch
    updated_at: int
    state: str
    model: str
    params: dict[str, Any]  # the request (core.images.ImageRequest.params())
    key_id: str = ""
    app: str = ""
    end_user: str = ""
    backend: str = ""
    prompt_id: str = ""
    attempts: int = 0
    owner: str = ""
    lease_until: int = 0
    cancel_requested: bool = False
    progress_value: int = 0
    progress_max: int = 0
    progress_node: str = ""
    seed: int | None = None
    error: str = ""
    started_at: int | None = None
    finished_at: int | None = None
    gpu_ms: float = 0.0
    input_image: str = ""  # edits: the input image's path under the results folder


@dataclass(frozen=True, slots=True)
class FileRecord:
    id: str
    job_id: str
    idx: int
    created_at: int
    key_id: str
    path: str  # relative to the results folder
    mime: str
    bytes: int
    width: int = 0
    height: int = 0


@dataclass(frozen=True, slots=True)
class PresetRecord:
    id: str
    name: str
    created_at: int
    key_id: str
    model: str
    params: dict[str, Any]


JOB_COLUMNS = tuple(f.name for f in fields(JobRecord))
FILE_COLUMNS = tuple(f.name for f in fields(FileRecord))
PRESET_COLUMNS = tuple(f.name for f in fields(PresetRecord))
JOB_SELECT = f"SELECT {', '.join(JOB_COLUMNS)} FROM image_jobs"
FILE_SELECT = f"SELECT {', '.join(FILE_COLUMNS)} FROM image_files"
# What a running job may update besides its state.
MUTABLE = frozenset(
    {
        "backend", "prompt_id", "owner", "lease_until", "progress_value", "progress_max",
        "progress_node", "seed", "error", "started_at", "finished_at", "gpu_ms",
        "input_image", "cancel_requested",
    }
)  # fmt: skip


def job_of_row(r: Sequence[Any]) -> JobRecord:
    d = dict(zip(JOB_COLUMNS, r, strict=True))
    d["params"] = orjson.loads(d["params"]) if d["params"] else {}
    d["cancel_requested"] = bool(d["cancel_requested"])
    d["gpu_ms"] = float(d["gpu_ms"] or 0.0)
    return JobRecord(**d)


def file_of_row(r: Sequence[Any]) -> FileRecord:
    return FileRecord(*r)


def marks(n: int) -> str:
    return ", ".join("?" * n)


def db_value(v: Any) -> Any:
    return int(v) if isinstance(v, bool) else v
