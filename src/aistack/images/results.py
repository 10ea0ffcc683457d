"""Where finished images live: files under one folder, their facts in the store.

Files go to `<root>/YYYY/MM/DD/<file id>.<ext>` (written to a temporary name, then
renamed, so a reader never sees half an image); the store's `image_files` rows carry
what the gallery shows and the job row the rest (prompt, seed, model, size, key,
timings). Several replicas share one folder (a volume) as they share one database.
Retention removes files older than `retention_days`, then the oldest until the total
is under `max_bytes`, and finally finished jobs with no images left.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from aistack.store.job_records import FileRecord

_MIMES = {
    b"\x89PNG\r\n\x1a\n": ("image/png", "png"),
    b"\xff\xd8\xff": ("image/jpeg", "jpg"),
    b"RIFF": ("image/webp", "webp"),
    b"GIF8": ("image/gif", "gif"),
}


def sniff(data: bytes) -> tuple[str, str]:
    """(MIME type, extension) from the first bytes."""
    for magic, kind in _MIMES.items():
        if data.startswith(magic):
            return kind
    return "application/octet-stream", "bin"


def dimensions(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG (its IHDR) or a baseline JPEG; (0, 0) if unknown."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    if data.startswith(b"\xff\xd8"):
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                break
            marker, size = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
            if marker in (0xC0, 0xC1, 0xC2):
                h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                return int(w), int(h)
            i += 2 + size
    return 0, 0


def new_file_id() -> str:
    """Unguessable: a file's URL is enough to fetch it, as OpenAI's image URLs are."""
    return "img_" + secrets.token_urlsafe(18)


@dataclass(frozen=True, slots=True)
class Results:
    root: Path

    def save(self, job_id: str, idx: int, data: bytes, key_id: str) -> FileRecord:
        """Write one image (blocking: call it off the event loop)."""
        fid = new_file_id()
        mime, ext = sniff(data)
        now = time.time()
        rel = Path(time.strftime("%Y/%m/%d", time.gmtime(now))) / f"{fid}.{ext}"
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        w, h = dimensions(data)
        return FileRecord(fid, job_id, idx, int(now * 1000), key_id, rel.as_posix(), mime,
                          len(data), w, h)  # fmt: skip

    def path(self, f: FileRecord) -> Path:
        p = (self.root / f.path).resolve()
        if not p.is_relative_to(self.root.resolve()):
            raise ValueError(f"image file {f.id} is outside {self.root}")
        return p

    def read(self, f: FileRecord) -> bytes | None:
        try:
            return self.path(f).read_bytes()
        except (OSError, ValueError):
            return None

    def unlink(self, files: list[FileRecord]) -> None:
        for f in files:
            with contextlib.suppress(OSError, ValueError):
                self.path(f).unlink()

    def save_input(self, job_id: str, data: bytes) -> str:
        """An edit's input image, kept until its job ends (a resubmission uploads it again)."""
        _, ext = sniff(data)
        rel = Path("inputs") / f"{job_id}.{ext}"
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return rel.as_posix()

    def read_input(self, rel: str) -> bytes | None:
        try:
            return (self.root / rel).read_bytes()
        except OSError:
            return None

    def drop_input(self, rel: str) -> None:
        if rel:
            with contextlib.suppress(OSError):
                (self.root / rel).unlink()
