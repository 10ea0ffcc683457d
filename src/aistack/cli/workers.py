"""`aistack serve` with `server.workers: N`: a supervisor and N worker processes.

Each worker is a whole gateway (`aistack serve` again, told its place by the
environment: `AISTACK_WORKER=i/N`, `AISTACK_WORKER_DIR`) with its own event loop and
its own listener on the same port (SO_REUSEPORT: the kernel spreads new connections
over the listeners). The supervisor holds no socket and serves nothing: it makes what
the workers share (the limits' table when there is no Redis, the folder of their
metrics sockets), starts them, forwards SIGTERM/SIGINT and waits for them to finish
their requests, and starts again a worker that died on its own (after a pause that
grows while it keeps dying at start). What the workers share otherwise is the store
(keys, the ledger: SQLite in WAL mode with a busy timeout, or PostgreSQL) and, for
keys, the access stamp they each poll every `auth.watch` seconds.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("aistack")

STARTING = 5.0  # seconds: a worker that dies sooner failed to start
GIVE_UP = 5  # failed starts in a row (every worker) before the supervisor gives up


def shared_folder() -> Path:
    """Where the workers' shared table and sockets live: memory-backed when it can be."""
    # mkdtemp makes a fresh folder only this user can enter, wherever it is.
    shm = "/dev/shm"  # noqa: S108
    base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="aistack-workers-", dir=base))


def exit_status(code: int) -> int:
    """A worker's return code as a shell would report it: 128+N for one killed by signal N."""
    return 128 - code if code < 0 else code


def ended_how(code: int) -> str:
    """For the log: "exited with 3" or "was killed by SIGKILL"."""
    if code >= 0:
        return f"exited with {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


def _orphan_stops() -> None:
    """In the worker, before it runs: SIGTERM when its parent dies (Linux's prctl)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the supervisor's own stop still reaches the workers


class Supervisor:
    def __init__(self, argv: list[str], count: int, shared_limits: bool) -> None:
        self.argv = argv
        self.count = count
        self.folder = shared_folder()
        self.shared_limits = shared_limits
        if shared_limits:
            from aistack.limits.shared import create_table

            create_table(self.folder / "limits", count)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.started: dict[int, float] = {}
        self.failed: dict[int, int] = {}
        self.stopping = False

    def _spawn(self, i: int) -> None:
        env = {
            **os.environ,
            "AISTACK_WORKER": f"{i}/{self.count}",
            "AISTACK_WORKER_DIR": str(self.folder),
        }
        cmd = [sys.executable, "-m", "aistack.cli.main", *self.argv]
        # A process group of its own: a terminal's Ctrl-C reaches the supervisor alone,
        # which passes it on once (a worker told twice cuts what is in flight). And told
        # to stop if the supervisor dies without saying so (SIGKILL).
        self.procs[i] = subprocess.Popen(cmd, env=env, process_group=0, preexec_fn=_orphan_stops)
        self.started[i] = time.monotonic()
        log.info("worker %d started (pid %d)", i, self.procs[i].pid)

    def _stop(self, signum: int, frame: object) -> None:
        if self.stopping:  # a second signal: the workers cut what is in flight
            for p in self.procs.values():
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
            return
        self.stopping = True
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        log.info("supervisor (pid %d): %d workers on one port", os.getpid(), self.count)
        try:
            for i in range(self.count):
                self._spawn(i)
            return self._watch()
        finally:
            for p in self.procs.values():  # never leave a worker behind
                if p.poll() is None:
                    p.kill()
                    p.wait()
            if self.shared_limits:
                from aistack.limits.shared import remove_table

                remove_table(self.folder / "limits")
            shutil.rmtree(self.folder, ignore_errors=True)

    def _watch(self) -> int:
        worst = 0
        due: dict[int, float] = {}  # workers to start again, and when
        while True:
            if self.stopping:
                for i, p in self.procs.items():
                    ended = p.wait()
                    if ended != 0:
                        how = ended_how(ended)
                        log.error("worker %d (pid %d) %s while stopping", i, p.pid, how)
                    # A signal counts like a failure: 128+N, as shells report it.
                    worst = max(worst, exit_status(ended))
                log.info("supervisor: every worker has stopped")
                return worst
            now = time.monotonic()
            for i, p in self.procs.items():
                code = p.poll()
                if code is None or i in due or self.stopping:
                    continue
                quick = now - self.started[i] < STARTING
                self.failed[i] = self.failed.get(i, 0) + 1 if quick else 0
                if quick and min(self.failed.get(w, 0) for w in range(self.count)) >= GIVE_UP:
                    log.error("supervisor: the workers keep failing at start; stopping")
                    self._stop(signal.SIGTERM, None)
                    return exit_status(code) or 1
                pause = min(10.0, 0.5 * 2 ** self.failed[i]) if quick else 0.5
                log.error("worker %d (pid %d) %s; starting it again in %.1fs",
                          i, p.pid, ended_how(code), pause)  # fmt: skip
                due[i] = now + pause
            for i, when in list(due.items()):
                if now >= when and not self.stopping:
                    del due[i]
                    self._spawn(i)
            time.sleep(0.1)
