"""A real ComfyUI for the tests: installed once into a cache, started per test module.

ComfyUI is not on PyPI, so its source comes from the shared folder beside the clone
(`shared/comfyui/`, found by walking up from the repository, or $AISTACK_COMFYUI_SRC):
`comfy_up.sh --no-start --tiny-ckpt` installs it idempotently into
`$AISTACK_COMFYUI_DIR` (default `${XDG_CACHE_HOME:-~/.cache}/aistack/comfyui`, outside
any clone, so every run and CI reuse it; about 5 minutes the first time on a busy
two-core machine, nothing after) with a random-weight SD1.5-shaped checkpoint, so a
real txt2img graph runs on CPU. A file lock keeps two sessions from installing at once.

Where it cannot be installed the tests that need it skip, saying why, except under
CI=true, where that is a failure. Each ComfyUI started here is its own process on a
free port with its own input, output, temp and user folders (so two can run side by
side, as the failover test needs); start-up waits on `/system_stats` with a deadline
generous enough for a busy machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.procs import free_port
from tests.results import ProcessLog, process_log

TINY_CKPT = "tiny-sd15-random.safetensors"
TINY_MODEL = "tiny-sd15-random"
INSTALL_TIMEOUT = 1800.0
START_TIMEOUT = 240.0


def cache_dir() -> Path:
    if os.environ.get("AISTACK_COMFYUI_DIR"):
        return Path(os.environ["AISTACK_COMFYUI_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aistack" / "comfyui"


def _source() -> Path | None:
    given = os.environ.get("AISTACK_COMFYUI_SRC")
    if given:
        return Path(given)
    here = Path(__file__).resolve().parent.parent
    for parent in (here, *here.parents):
        c = parent / "shared" / "comfyui"
        if (c / "comfy_up.sh").is_file():
            return c
    return None


def _unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}; CI needs a real ComfyUI (a missing service is a failure)")
    pytest.skip(why)


def _installed(d: Path) -> bool:
    return (
        (d / "venv" / ".comfy_deps_ok").is_file()
        and (d / "ComfyUI" / "main.py").is_file()
        and (d / "ComfyUI" / "models" / "checkpoints" / TINY_CKPT).is_file()
    )


def install() -> Path:
    """The install directory, installing ComfyUI and the tiny checkpoint when missing."""
    d = cache_dir()
    if _installed(d):
        return d
    src = _source()
    if src is None:
        _unavailable(
            "ComfyUI is not installed and its source (shared/comfyui/comfy_up.sh) was not "
            "found beside the clone; set AISTACK_COMFYUI_SRC"
        )
        raise AssertionError("unreachable")
    d.mkdir(parents=True, exist_ok=True)
    with open(d.parent / f"{d.name}.install-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be installing it now
        if not _installed(d):
            t = time.monotonic()
            out = subprocess.run(
                ["bash", str(src / "comfy_up.sh"), "--dir", str(d), "--tiny-ckpt", "--no-start"],
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
            )
            if out.returncode != 0 or not _installed(d):
                tail = (out.stderr or out.stdout)[-3000:]
                _unavailable(f"installing ComfyUI into {d} failed:\n{tail}")
            print(f"installed ComfyUI into {d} in {time.monotonic() - t:.0f}s")
    return d


@dataclass
class Comfy:
    proc: subprocess.Popen[bytes]
    port: int
    root: Path  # this instance's own input/output/temp/user folders and log
    kept: ProcessLog | None = None  # kept for the tests that fail while it runs

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        p = self.root / "comfy.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.kept is not None:
            self.kept.stop()


def start(root: Path, port: int | None = None) -> Comfy:
    """A ComfyUI process of the shared install, on its own port and folders."""
    d = install()
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("input", "output", "temp", "user"):
        (root / sub).mkdir(exist_ok=True)
    port = port or free_port()
    cmd = [
        str(d / "venv" / "bin" / "python"), "main.py", "--cpu", "--listen", "127.0.0.1",
        "--port", str(port), "--disable-auto-launch", "--disable-all-custom-nodes",
        "--input-directory", str(root / "input"), "--output-directory", str(root / "output"),
        "--temp-directory", str(root / "temp"), "--user-directory", str(root / "user"),
        "--database-url", "sqlite:///:memory:",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1"}
    with (root / "comfy.log").open("ab") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=d / "ComfyUI",
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    c = Comfy(proc, port, root, process_log(root / "comfy.log"))
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"ComfyUI exited with {proc.returncode}:\n{c.output()[-3000:]}")
        try:
            with urllib.request.urlopen(c.url + "/system_stats", timeout=5) as r:
                if r.status == 200:
                    return c
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            c.stop(signal.SIGKILL)
            raise RuntimeError(f"ComfyUI did not answer in {START_TIMEOUT}s:\n{c.output()[-3000:]}")
        time.sleep(0.25)


@contextlib.contextmanager
def running(root: Path, port: int | None = None) -> Iterator[Comfy]:
    c = start(root, port)
    try:
        yield c
    finally:
        c.stop()


def txt2img_graph(seed: int, steps: int = 2, size: int = 64, batch: int = 1) -> dict[str, Any]:
    """The standard txt2img graph on the tiny checkpoint (vary the seed: ComfyUI caches)."""
    return {
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler",
            "scheduler": "normal", "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0],
            "negative": ["7", 0], "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_CKPT}},
        "5": {"class_type": "EmptyLatentImage",
              "inputs": {"width": size, "height": size, "batch_size": batch}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "t", "images": ["8", 0]}},
    }  # fmt: skip


def img2img_graph(denoise: float = 0.5, steps: int = 2) -> dict[str, Any]:
    """An edit on the tiny checkpoint: LoadImage -> VAEEncode -> KSampler -> VAEDecode."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_CKPT}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["1", 0], "vae": ["2", 2]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 1]}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 1]}},
        "6": {"class_type": "KSampler", "inputs": {
            "seed": 1, "steps": steps, "cfg": 7.0, "sampler_name": "euler",
            "scheduler": "normal", "denoise": denoise, "model": ["2", 0], "positive": ["4", 0],
            "negative": ["5", 0], "latent_image": ["3", 0]}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["2", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"filename_prefix": "e", "images": ["7", 0]}},
    }  # fmt: skip


def png(width: int, height: int, rgb: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A solid-colour RGB PNG."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    row = b"\x00" + bytes(rgb) * width
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b""))  # fmt: skip


def empty_image_graph(width: int = 64, height: int = 64, color: int = 0xFF0000) -> dict[str, Any]:
    """Model-free (milliseconds): EmptyImage -> SaveImage."""
    return {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": width, "height": height, "batch_size": 1, "color": color}},
        "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "t", "images": ["1", 0]}},
    }  # fmt: skip
