"""Real processes for tests: aistack gateways, llama-cpp-python's server, small fault servers.

Every process binds 127.0.0.1 on a free port, is waited for until it answers, and is
stopped (and its log shown on failure) by the fixture that started it. Its log is
registered with tests/results.py, which keeps it for every test that fails while the
process runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.results import ProcessLog, process_log

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except urllib.error.HTTPError as e:
            if e.code < 500:
                return
            last = e
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer in {timeout}s: {last}")


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    kept: ProcessLog | None = None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.kept is not None:
            self.kept.stop()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start(
    cmd: list[str],
    url: str,
    log: Path,
    *,
    ready: str = "/",
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 90.0,
) -> Proc:
    full_env = {**os.environ, **(env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=cwd, start_new_session=True
        )
    p = Proc(proc, url, log, process_log(log))
    try:
        wait_http(url + ready, timeout, proc)
    except Exception:
        p.stop(signal.SIGKILL)
        raise RuntimeError(f"{cmd[0]} did not start:\n{p.output()[-4000:]}") from None
    return p


def start_gateway(
    tmp: Path,
    config: dict[str, object] | None,
    *,
    name: str = "gw",
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
    port: int | None = None,
) -> Proc:
    """`aistack serve` on a free port (or `port`); `config=None` runs the embedded default."""
    port = port or free_port()
    cmd = [str(VENV_BIN / "aistack"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    work = tmp / name
    work.mkdir(parents=True, exist_ok=True)
    if config is not None:
        path = work / "aistack.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        cmd += ["--config", str(path)]
    cmd += args or []
    # The default SQLite database lives under $XDG_DATA_HOME: keep it in the test's folder.
    env = {"AISTACK_CONFIG": "", "XDG_DATA_HOME": str(work / "data"), **(env or {})}
    return start(cmd, f"http://127.0.0.1:{port}", work / "log.txt", env=env, cwd=work)


def start_llama_server(tmp: Path, model_path: str, alias: str) -> Proc:
    """llama-cpp-python's own OpenAI-compatible server: a third-party backend."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", model_path, "--model_alias", alias,
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096",
        # By default a new request interrupts the one generating (its stream just ends):
        # tests send overlapping requests and need every one of them finished.
        "--interrupt_requests", "false",
    ]  # fmt: skip
    return start(cmd, f"http://127.0.0.1:{port}", tmp / "llama-server.log", ready="/v1/models")


@contextlib.contextmanager
def running(p: Proc) -> Iterator[Proc]:
    try:
        yield p
    finally:
        p.stop()


def aistack_cli(
    *args: str,
    config: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run an `aistack` command (keys, usage, db) as a user would."""
    cmd = [str(VENV_BIN / "aistack"), *args]
    if config is not None:
        cmd += ["--config", str(config)]
    env = {**os.environ, "AISTACK_CONFIG": "", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def write_config(where: Path, cfg: dict[str, object]) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    path = where / "aistack.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def create_key(config: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """`aistack keys create --json ...`; the key as printed (the only time it is)."""
    import json

    out = aistack_cli("keys", "create", "--json", *args, config=config, env=env)
    assert out.returncode == 0, out.stderr
    return str(json.loads(out.stdout)["key"])
