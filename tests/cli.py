"""Running the `aistack` command line as a user does: a real process, a real config file."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import yaml

from tests.procs import VENV_BIN


def write_config(path: Path, config: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def aistack(
    *args: str,
    config: Path | None = None,
    timeout: float = 180,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    cmd = [str(VENV_BIN / "aistack"), *args]
    if config is not None:
        cmd += ["--config", str(config)]
    full = {**os.environ, "AISTACK_CONFIG": "", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full)


def _ctrl_c_as_at_a_terminal() -> None:
    # A command started in the background by a non-interactive shell (`make unit &`, a CI
    # runner) inherits SIGINT ignored, and Python then leaves it ignored: a test's SIGINT
    # would do nothing. The command a user interrupts at a terminal has the default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def popen(*args: str, config: Path | None = None) -> subprocess.Popen[str]:
    """The command as started at a terminal (Ctrl-C, i.e. SIGINT, does what it does there)."""
    cmd = [str(VENV_BIN / "aistack"), *args]
    if config is not None:
        cmd += ["--config", str(config)]
    env = {**os.environ, "AISTACK_CONFIG": "", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=_ctrl_c_as_at_a_terminal,
    )
