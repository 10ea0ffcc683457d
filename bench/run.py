"""The benchmark runner behind `make bench` and `make bench-quick`.

Four arms answer the same requests, all up at once:
  direct   the nginx mock itself (CPU 0): the baseline every "added" figure subtracts;
  nginx    nginx proxy_pass in front of the mock (CPU 1): the floor;
  aistack  the gateway (CPU 1);
  litellm  LiteLLM's proxy (CPU 1): the peer.
Load (wrk, the stream client, this runner) runs on CPU 0. Each round runs every arm on every
lane; the order flips every round and each figure is compared with the other arms of the same
round, because this machine's speed drifts 2-4x over minutes. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import embedded
import payloads
import replicas
import report
import streamclient as sc
import vectors
import workers
from report import floor_lane

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
OUT = BENCH / "out"
LOGS = OUT / "logs"

MOCK_PORT, NGINX_PORT, AISTACK_PORT, LITELLM_PORT = 18080, 18081, 18434, 18400
REPLICA_PORT, WORKERS_PORT, BEFORE_PORT = 18435, 18436, 18440
AUTH = "Bearer sk-bench"  # LiteLLM runs without keys; the header is sent all the same
# aistack runs with its real configuration: a virtual key minted for each run (checked on
# every request), the usage ledger (SQLite), metrics, request logs and tracing on.
AISTACK_DB = OUT / "aistack-bench.db"
AISTACK_ENV = {
    "AISTACK_BENCH_DB": str(AISTACK_DB),
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{MOCK_PORT}/v1/traces",
    "OTEL_SERVICE_NAME": "aistack-bench",
}
aistack_auth = ""
replica_auth = ""
before_auth = ""
# Replica mode: the same gateway with its ledger on PostgreSQL and its limits on Redis,
# both the real servers of this machine (a database and a key prefix of the run's own).
PG_SERVER = os.environ.get("AISTACK_BENCH_PG", "postgresql://127.0.0.1:5432/test")
REDIS_URL = os.environ.get("AISTACK_BENCH_REDIS", "redis://127.0.0.1:6379/0")
# Every key has limits (far above what a run sends), so the limiter runs on every request:
# in process for aistack, in Redis for the replica.
KEY_LIMITS = ["--rpm", "1000000000", "--tpm", "2000000000", "--scope", "metrics"]
LOAD_CPU, GW_CPU = 0, 1
ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")
AISTACK_BIN = ROOT / ".venv" / "bin" / "aistack"
LITELLM_BIN = BENCH / ".venv-litellm" / "bin" / "litellm"

TOKENS = len(payloads.WORDS)  # token frames in every canned stream
PACED = payloads.PACE["-paced"]
TESTS = ("rps", "c1", "big", "ttft", "gap", "mem", "vec", "workers", "llm", "sched")


def good(r: sc.Result, framing: str) -> bool:
    """A complete answer: 2xx, the terminal frame, and every token of a stream."""
    return r.ok and (framing == sc.JSON or r.tokens == TOKENS)


@dataclass(frozen=True)
class Plan:
    """How much of everything a run does."""

    mode: str
    rounds: int
    rps_s: int  # wrk seconds per arm at c=64 (wrk takes whole seconds)
    peer_rps_s: int  # LiteLLM's: at ~1 s latency under c=64, a short window counts the ramp
    lat_s: int  # wrk seconds per arm at c=1
    conc: int  # concurrency of the throughput runs
    peer_lanes: tuple[str, ...]  # lanes LiteLLM runs (it has no Ollama front end at all)
    lat_lanes: tuple[str, ...]
    ttft_lanes: tuple[str, ...]
    ttft_pairs: int  # paired direct/arm streams per arm, lane and round
    gap_lanes: tuple[str, ...]
    gap_conns: int  # concurrent paced streams
    gap_per_conn: int
    big: bool  # the 500 KB prompt lane
    mem_streams: int  # 0: no memory test
    startups: int  # aistack spawns timed
    ready_wait: float  # seconds aistack gets to answer GET /
    litellm_wait: float
    replica_lanes: tuple[str, ...]  # lanes of the replica arm (throughput and c=1)
    workers_rounds: int  # alternating 1-worker / 2-worker throughput runs
    tests: tuple[str, ...] = TESTS  # --only picks some


# "client>backend": oa OpenAI chat, ol Ollama, an Anthropic Messages, rs OpenAI Responses
# (the agents' dialects, served only by translating).
LANES = ("oa>oa", "ol>ol", "oa>ol", "ol>oa", "an>ol", "rs>oa")
CLIENT_PATHS = {
    "oa": "/v1/chat/completions",
    "ol": "/api/chat",
    "an": "/v1/messages",
    "rs": "/v1/responses",
}
REQUESTS = {
    "oa": payloads.openai_request,
    "ol": payloads.ollama_request,
    "an": payloads.anthropic_request,
    "rs": payloads.responses_request,
}
QUICK = Plan(
    mode="quick",
    rounds=2,
    rps_s=1,
    peer_rps_s=2,
    lat_s=1,
    conc=64,
    peer_lanes=("oa>oa",),
    lat_lanes=("oa>oa",),
    ttft_lanes=("oa>oa", "ol>ol", "an>ol", "rs>oa"),
    ttft_pairs=20,
    gap_lanes=("oa>oa",),
    gap_conns=50,
    gap_per_conn=1,
    big=False,
    mem_streams=0,
    startups=1,
    ready_wait=10,
    litellm_wait=30,
    replica_lanes=("oa>oa",),
    workers_rounds=2,
)
FULL = Plan(
    mode="full",
    rounds=4,
    rps_s=3,
    peer_rps_s=5,
    lat_s=2,
    conc=64,
    peer_lanes=("oa>oa", "oa>ol"),
    lat_lanes=LANES,
    ttft_lanes=LANES,
    ttft_pairs=100,
    gap_lanes=LANES,
    gap_conns=100,
    gap_per_conn=4,
    big=True,
    mem_streams=1000,
    startups=3,
    ready_wait=20,
    litellm_wait=120,
    replica_lanes=("oa>oa", "ol>ol"),
    workers_rounds=4,
)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- processes ---------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids += [int(p) for p in task.read_text().split()]
        except OSError:
            pass
    return kids


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@dataclass
class Proc:
    """A process this run started (in its own session, so its children stop with it)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    cmd: list[str]
    env: dict[str, str]

    def pids(self) -> list[int]:
        """The process tree, without wrappers (strace, taskset) whose memory is not the arm's."""
        out, todo = [], [self.popen.pid]
        while todo:
            pid = todo.pop()
            if _comm(pid) not in ("strace", "taskset"):
                out.append(pid)
            todo += _children(pid)
        return out

    def rss(self) -> int:
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total

    def cpu_ticks(self) -> int:
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except (OSError, IndexError, ValueError):
                pass
        return total

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 3) -> str:
        try:
            text = self.log.read_text(errors="replace").rsplit("\n=== ", 1)[-1]
        except OSError:
            return ""
        last = [ln for ln in text.splitlines()[1:] if ln.strip()][-lines:]  # after the header
        return " / ".join(ln.strip() for ln in last) or "no output"

    def stop(self) -> None:
        if self.alive():
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(5)
        else:
            self.popen.wait(0)


STARTED: list[Proc] = []


def spawn(name: str, cmd: list[str], cpu: int | None, env: dict[str, str] | None = None) -> Proc:
    """Start `cmd` (pinned to `cpu`) in its own session, output to bench/out/logs/NAME.log."""
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    LOGS.mkdir(parents=True, exist_ok=True)
    logfile = LOGS / f"{name}.log"
    with logfile.open("ab") as fh:
        fh.write(f"\n=== {datetime.now(UTC).isoformat()} {' '.join(cmd)}\n".encode())
        fh.flush()
        popen = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=OUT,
            start_new_session=True,
        )
    proc = Proc(name, popen, logfile, cmd, env or {})
    STARTED.append(proc)
    (OUT / "pids").mkdir(exist_ok=True)
    (OUT / "pids" / name).write_text(str(popen.pid))
    return proc


def mint_key(config: Path, env: dict[str, str] | None = None) -> str | None:
    """A fresh ledger database and one virtual key in it, as an app would be given."""
    env = env or AISTACK_ENV
    db = env.get("AISTACK_BENCH_DB", "")
    if not db.startswith("postgresql"):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    cmd = [str(AISTACK_BIN), "keys", "create", "--name", "bench", "--json", "--config", str(config)]
    done = subprocess.run(
        [*cmd, *KEY_LIMITS], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        (LOGS / "aistack-keys.log").write_text(done.stdout + done.stderr)
        return None
    return str(json.loads(done.stdout)["key"])


def respawn(proc: Proc) -> Proc:
    """Stop `proc` and start the same command again (a fresh process)."""
    proc.stop()
    return spawn(proc.name, proc.cmd, None, proc.env)


def reap_leftovers() -> None:
    """Stop what an interrupted earlier run left behind: by its recorded pid, and only if that
    pid still leads its own session running one of this bench's commands (pids get reused)."""
    for pidfile in (OUT / "pids").glob("*"):
        try:
            pid = int(pidfile.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            ours = str(BENCH) in cmdline and os.getpgid(pid) == pid
        except (OSError, ValueError):
            ours = False
        if ours:
            log(f"stopping {pidfile.name} (pid {pid}), left over from an earlier run")
            try:
                os.killpg(pid, signal.SIGTERM)
            except OSError:
                pass
            time.sleep(0.5)
        pidfile.unlink()


def http_status(port: int, path: str = "/", timeout: float = 0.5) -> int | None:
    """Status of GET `path`, or None when nothing answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
            s.sendall(head.encode())
            answer = s.recv(64)
    except OSError:
        return None
    try:
        return int(answer.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def wait_ready(
    proc: Proc, port: int, deadline: float, since: float | None = None
) -> tuple[float | None, str]:
    """Seconds from `since` (default: now) until GET / answers 200, or None and the reason."""
    t0 = time.perf_counter() if since is None else since
    while time.perf_counter() - t0 < deadline:
        if http_status(port, timeout=0.2) == 200:
            return time.perf_counter() - t0, ""
        if not proc.alive():
            return None, f"exited with code {proc.popen.returncode}: {proc.tail()}"
        time.sleep(0.005)
    return None, f"GET / gave no 200 within {deadline:.0f} s: {proc.tail()}"


def settle(procs: list[Proc], quiet_ms: int = 60, limit: float = 3.0) -> None:
    """Wait until the gateways stop using CPU (a slow arm drains its backlog off the clock)."""
    t0 = time.perf_counter()
    last = sum(p.cpu_ticks() for p in procs)
    while time.perf_counter() - t0 < limit:
        time.sleep(quiet_ms / 1000)
        now = sum(p.cpu_ticks() for p in procs)
        if now == last:
            return
        last = now


# --- arms and lanes ----------------------------------------------------------------------------


@dataclass
class Arm:
    name: str
    port: int
    proc: Proc | None = None
    status: str = "up"  # "up", or why the arm did not run
    skipped: dict[str, str] = field(default_factory=dict)  # "lane/shape" -> why not
    died: str = ""  # set if the process exits during the rounds; the rest of the run skips it

    @property
    def up(self) -> bool:
        return self.status == "up"


def model(backend: str, shape: str) -> str:
    kind = "json" if shape in ("json", "big") else ("sse" if backend == "oa" else "nd")
    suffix = {"paced": "-paced", "long": "-long"}.get(shape, "")
    return f"bench-{backend}-{kind}{suffix}"


def target(arm: Arm, lane: str, shape: str) -> sc.Target | None:
    """What `arm` is sent for `lane` ("client>backend") and `shape`; None when it cannot."""
    client, backend = lane.split(">")
    name = model(backend, shape)
    stream = shape in ("stream", "paced", "long")
    if arm.name in ("direct", "nginx"):
        if client != backend:
            return None  # the floor of a translating lane is its backend's own lane
        path = f"/{name.removeprefix('bench-')}" + (
            "/v1/chat/completions" if backend == "oa" else "/api/chat"
        )
    elif arm.name == "litellm" and client == "ol":
        return None  # LiteLLM has no Ollama-dialect front end
    else:
        path = CLIENT_PATHS[client]
    prompt = payloads.big_prompt() if shape == "big" else payloads.QUESTION
    body = REQUESTS[client](name, stream=stream, prompt=prompt)
    framing = (sc.NDJSON if client == "ol" else sc.SSE) if stream else sc.JSON
    auth = {"aistack": aistack_auth, "replica": replica_auth, "before": before_auth}.get(
        arm.name, AUTH if arm.name == "litellm" else ""
    )
    return sc.Target(arm.port, path, body, framing, auth)


# --- measurements ------------------------------------------------------------------------------


def body_file(t: sc.Target) -> Path:
    path = OUT / "bodies" / f"{hashlib.sha1(t.body).hexdigest()[:16]}.json"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(t.body)
    return path


def wrk(t: sc.Target, conns: int, seconds: int) -> dict[str, float]:
    cmd = ["taskset", "-c", str(LOAD_CPU), "wrk", "-t1", f"-c{conns}", f"-d{seconds}s"]
    cmd += ["--timeout", "10s", "-s", str(BENCH / "wrk" / "post.lua")]
    cmd.append(f"http://127.0.0.1:{t.port}{t.path}")
    env = {**os.environ, "BENCH_BODY": str(body_file(t)), "BENCH_AUTH": t.auth}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH "):
            r: dict[str, float] = json.loads(line[6:])
            r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
            r["errors"] = sum(r[k] for k in ("connect", "read", "write", "status", "timeout"))
            return r
    log(f"wrk printed no result: {done.stdout[-200:]} {done.stderr[-200:]}")
    return {"requests": 0, "errors": 1, "rps": math.nan}


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


async def paired_ttft(
    pairs: list[tuple[str, str, sc.Target, sc.Target]], n: int
) -> dict[tuple[str, str], dict[str, float]]:
    """For each (arm, lane): n times, one direct stream then one arm stream, back to back on
    persistent connections; the paired differences of TTFT cancel the drift between them."""
    conns = {(a, lane): (sc.Conn(d), sc.Conn(t)) for a, lane, d, t in pairs}
    diffs: dict[tuple[str, str], list[float]] = {k: [] for k in conns}
    bad: dict[tuple[str, str], int] = dict.fromkeys(conns, 0)
    try:
        for _ in range(n):
            for key, (direct, arm) in conns.items():
                d_framing, g_framing = direct.target.framing, arm.target.framing
                d = await direct.send(timeout=30)
                g = await arm.send(timeout=30)
                if good(d, d_framing) and good(g, g_framing):
                    diffs[key].append(g.ttft - d.ttft)
                else:
                    bad[key] += 1
    finally:
        for direct, arm in conns.values():
            direct.close()
            arm.close()
    return {
        k: {
            "added_p50_ms": pct(v, 50) * 1e3,
            "added_p90_ms": pct(v, 90) * 1e3,
            "added_p99_ms": pct(v, 99) * 1e3,
            "pairs": len(v),
            "errors": bad[k],
        }
        for k, v in diffs.items()
    }


def stream_stats(results: list[sc.Result], framing: str) -> dict[str, float]:
    ok = [r for r in results if good(r, framing)]
    gaps = [g for r in ok for g in r.gaps]
    return {
        "streams": len(results),
        "errors": len(results) - len(ok),
        "frames_min": min((r.frames for r in results), default=0),
        "frames_max": max((r.frames for r in results), default=0),
        "ttft_p50_ms": pct([r.ttft for r in ok], 50) * 1e3,
        "ttft_p99_ms": pct([r.ttft for r in ok], 99) * 1e3,
        "gap_p50_ms": pct(gaps, 50) * 1e3,
        "gap_p99_ms": pct(gaps, 99) * 1e3,
    }


# --- the run -----------------------------------------------------------------------------------


class Bench:
    def __init__(
        self,
        plan: Plan,
        with_litellm: bool,
        with_aistack: bool,
        aistack_config: Path,
        before_tree: Path | None = None,
    ) -> None:
        self.plan = plan
        self.aistack_config = aistack_config
        self.with_litellm = with_litellm
        self.with_aistack = with_aistack
        self.arms = {
            "direct": Arm("direct", MOCK_PORT),
            "nginx": Arm("nginx", NGINX_PORT),
            "aistack": Arm("aistack", AISTACK_PORT),
            "replica": Arm("replica", REPLICA_PORT),
            "before": Arm("before", BEFORE_PORT),
            "litellm": Arm("litellm", LITELLM_PORT),
        }
        self.before_tree = before_tree
        self.replica: replicas.Replica | None = None
        self.records: list[dict[str, object]] = []
        self.results: dict[str, object] = {"records": self.records}

    # setup ------------------------------------------------------------------------------------

    def start_nginx(self, name: str, template: str, cpu: int, values: dict[str, str]) -> Proc:
        prefix = OUT / f"nginx-{name}"
        prefix.mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        payloads.render(BENCH / "nginx" / template, conf, {"PREFIX": str(prefix), **values})
        cmd = ["nginx", "-p", f"{prefix}/", "-c", str(conf), "-e", str(prefix / "error.log")]
        return spawn(f"nginx-{name}", cmd, cpu)

    def start_litellm(self) -> Proc | None:
        arm = self.arms["litellm"]
        if not self.with_litellm:
            arm.status = "not run: --no-litellm"
            return None
        if not LITELLM_BIN.exists():
            arm.status = f"not run: {LITELLM_BIN.relative_to(ROOT)} missing (bench/setup.sh)"
            return None
        env = {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "ERROR",
            "LITELLM_TELEMETRY": "False",
            "OLLAMA_API_BASE": f"http://127.0.0.1:{MOCK_PORT}/ol-json",
            "HTTP_PROXY": "http://127.0.0.1:9",
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "ALL_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "127.0.0.1,localhost",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        cmd = [str(LITELLM_BIN), "--config", str(BENCH / "configs" / "litellm.yaml")]
        cmd += ["--host", "127.0.0.1", "--port", str(LITELLM_PORT), "--num_workers", "1"]
        cmd += ["--log_config", str(BENCH / "configs" / "litellm-log.json")]
        if shutil.which("strace"):  # record every connect(); seccomp-bpf stops on nothing else
            trace = OUT / "litellm-connect.log"
            cmd = [
                "strace",
                "-f",
                "--seccomp-bpf",
                "-e",
                "trace=connect",
                "-A",
                "-o",
                str(trace),
                *cmd,
            ]
        proc = spawn("litellm", cmd, GW_CPU, env)
        arm.proc = proc
        return proc

    def start_aistack(self) -> None:
        arm = self.arms["aistack"]
        if not self.with_aistack:
            arm.status = "not run: --no-aistack"
            return
        if not AISTACK_BIN.exists():
            arm.status = "not run: .venv/bin/aistack missing (run `make`)"
            return
        cmd = [str(AISTACK_BIN), "serve", "--config", str(self.aistack_config)]
        cmd += ["--host", "127.0.0.1", "--port", str(AISTACK_PORT)]
        key = mint_key(self.aistack_config)
        if key is None:
            arm.status = "not run: `aistack keys create` failed (see bench/out/logs)"
            return
        global aistack_auth
        aistack_auth = f"Bearer {key}"
        times, rss = [], []
        for i in range(self.plan.startups):
            while not port_free(AISTACK_PORT):
                time.sleep(0.05)
            t0 = time.perf_counter()
            proc = spawn("aistack", cmd, GW_CPU, AISTACK_ENV)
            ready, why = wait_ready(proc, AISTACK_PORT, self.plan.ready_wait, since=t0)
            if ready is None:
                proc.stop()
                arm.status = f"not run: {why}"
                return
            times.append(ready)
            rss.append(proc.rss())
            if i < self.plan.startups - 1:
                proc.stop()
            else:
                arm.proc = proc
        self.results["startup_aistack"] = {"ready_s": times, "rss_at_ready": rss}
        log(f"aistack ready in {', '.join(f'{t:.2f}' for t in times)} s")
        self.start_replica()
        self.start_before()

    def start_replica(self) -> None:
        """aistack in replica mode: the same config with PostgreSQL and Redis, CPU 1."""
        arm = self.arms["replica"]
        if not self.with_aistack:
            arm.status = "not run: --no-aistack"
            return
        try:
            self.replica = replicas.Replica(
                self.aistack_config, PG_SERVER, REDIS_URL, OUT, AISTACK_ENV
            )
        except Exception as e:  # no PostgreSQL or Redis here, or no driver
            arm.status = f"not run: {type(e).__name__}: {e}"
            return
        rep = self.replica
        up = subprocess.run(
            [str(AISTACK_BIN), "db", "upgrade", "--config", str(rep.config)],
            env={**os.environ, **rep.env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        key = mint_key(rep.config, rep.env) if up.returncode == 0 else None
        if key is None:
            arm.status = f"not run: db upgrade or keys create failed: {up.stderr[-300:]}"
            return
        global replica_auth
        replica_auth = f"Bearer {key}"
        cmd = [str(AISTACK_BIN), "serve", "--config", str(rep.config)]
        cmd += ["--host", "127.0.0.1", "--port", str(REPLICA_PORT)]
        proc = spawn("replica", cmd, GW_CPU, rep.env)
        ready, why = wait_ready(proc, REPLICA_PORT, self.plan.ready_wait)
        if ready is None:
            proc.stop()
            arm.status = f"not run: {why}"
            return
        arm.proc = proc
        log(f"replica (PostgreSQL {rep.database}, Redis) ready in {ready:.2f} s")

    def start_before(self) -> None:
        """An older tree's aistack (--before TREE, its own .venv and bench config), CPU 1."""
        arm = self.arms["before"]
        tree = self.before_tree
        if tree is None:
            arm.status = "not run: no --before tree"
            return
        binary = tree / ".venv" / "bin" / "aistack"
        config = tree / "bench" / "configs" / "aistack.yaml"
        if not binary.exists():
            arm.status = f"not run: {binary} missing"
            return
        env = {**AISTACK_ENV, "AISTACK_BENCH_DB": str(OUT / "aistack-before.db")}
        for suffix in ("", "-wal", "-shm"):
            Path(f"{env['AISTACK_BENCH_DB']}{suffix}").unlink(missing_ok=True)
        cmd = [str(binary), "keys", "create", "--name", "bench", "--json", "--config", str(config)]
        done = subprocess.run(
            [*cmd, *KEY_LIMITS[:4]],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            arm.status = f"not run: keys create failed: {done.stderr[-300:]}"
            return
        global before_auth
        before_auth = f"Bearer {json.loads(done.stdout)['key']}"
        cmd = [str(binary), "serve", "--config", str(config)]
        cmd += ["--host", "127.0.0.1", "--port", str(BEFORE_PORT)]
        proc = spawn("before", cmd, GW_CPU, env)
        ready, why = wait_ready(proc, BEFORE_PORT, self.plan.ready_wait)
        if ready is None:
            proc.stop()
            arm.status = f"not run: {why}"
            return
        arm.proc = proc
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=tree
        ).stdout.strip()
        self.results["before_tree"] = {"path": str(tree), "commit": commit}
        log(f"before ({commit}) ready in {ready:.2f} s")

    def check_tools(self) -> None:
        missing = [t for t in ("nginx", "wrk", "taskset") if not shutil.which(t)]
        if missing or not ECHO_MODULE.exists():
            sys.exit(f"bench: missing {missing or ECHO_MODULE}; run bench/setup.sh first")
        cpus = os.sched_getaffinity(0)
        if not {LOAD_CPU, GW_CPU} <= cpus:
            sys.exit(f"bench: needs CPUs {LOAD_CPU} and {GW_CPU}; this process may use {cpus}")
        os.sched_setaffinity(0, {LOAD_CPU})  # this runner is load, too
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
        if soft < want:  # 1,000 held streams need 1,000 sockets here and 2,000 in a gateway
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    def setup(self) -> None:
        self.check_tools()
        OUT.mkdir(parents=True, exist_ok=True)
        reap_leftovers()
        for port in (MOCK_PORT, NGINX_PORT, AISTACK_PORT, LITELLM_PORT):
            if not port_free(port):
                sys.exit(f"bench: 127.0.0.1:{port} is taken by another process; stop it first")
        (OUT / "litellm-connect.log").unlink(missing_ok=True)
        t0 = time.perf_counter()
        litellm = self.start_litellm()  # boots while the rest is set up (it takes seconds)
        values = {"PORT": str(MOCK_PORT), "ECHO_MODULE": str(ECHO_MODULE)}
        mock = self.start_nginx(
            "mock", "mock.conf.in", LOAD_CPU, {**values, **payloads.mock_values()}
        )
        proxy = self.start_nginx(
            "proxy", "proxy.conf.in", GW_CPU, {"PORT": str(NGINX_PORT), "MOCK_PORT": str(MOCK_PORT)}
        )
        self.arms["direct"].proc, self.arms["nginx"].proc = mock, proxy
        for arm, proc in (("direct", mock), ("nginx", proxy)):
            ready, why = wait_ready(proc, self.arms[arm].port, 10)
            if ready is None:
                sys.exit(f"bench: {proc.name} did not start: {why} (see {proc.log})")
        if litellm is not None:
            left = self.plan.litellm_wait - (time.perf_counter() - t0)
            ready, why = wait_ready(litellm, LITELLM_PORT, max(left, 1))
            if ready is None:
                litellm.stop()
                self.arms["litellm"].status = f"not run: {why}"
                log(f"LiteLLM: {why}")
            else:
                ready_s = time.perf_counter() - t0
                self.results["startup_litellm"] = {
                    "ready_s": [ready_s],
                    "rss_at_ready": [litellm.rss()],
                }
                log(f"LiteLLM ready in {ready_s:.1f} s (started in parallel with the nginx arms)")
        self.start_aistack()
        for name in ("replica", "before"):  # started with aistack, or not at all
            arm = self.arms[name]
            if arm.up and arm.proc is None:
                arm.status = f"not run: {self.arms['aistack'].status}"

    # smoke checks and warm-up -------------------------------------------------------------------

    def shapes(self) -> list[tuple[str, str]]:
        p = self.plan
        need = [(lane, "json") for lane in LANES]
        need += [(lane, "stream") for lane in LANES]
        need += [(lane, "paced") for lane in p.gap_lanes]
        if p.big:
            need += [("oa>oa", "big"), ("ol>ol", "big")]
        if p.mem_streams:
            need += [("oa>oa", "long"), ("ol>ol", "long")]
        return need

    def smoke(self) -> None:
        """One request per arm, lane and shape; whatever fails is left out, with the reason."""
        checks = [
            (arm, lane, shape, t)
            for lane, shape in self.shapes()
            for arm, t in self.targets(lane, shape)
        ]

        async def run_all() -> list[sc.Result]:
            out = []
            for _, _, shape, t in checks:
                if shape == "long":  # a 10 s stream: its first frame is enough here
                    out.append(await sc.first_frame(t, 10))
                else:
                    out.append(await sc.fetch(t, 10))
            return out

        smoke = []
        for (arm, lane, shape, t), r in zip(checks, sc.run(run_all()), strict=True):
            ok = r.ok if shape == "long" else good(r, t.framing)
            why = ""
            if not ok:
                why = r.error or (
                    f"{r.frames} frames with {r.tokens}/{TOKENS} tokens, "
                    f"{'complete' if r.done else 'no terminal frame'}"
                )
                if r.status >= 300:
                    why = f"HTTP {r.status}: {r.body[:160].decode(errors='replace')}"
                arm.skipped[f"{lane}/{shape}"] = why
                log(f"smoke: {arm.name} {lane} {shape}: {why}")
            smoke.append({"arm": arm.name, "lane": lane, "shape": shape, "ok": ok})
            smoke[-1].update({"frames": r.frames, "tokens": r.tokens, "status": r.status})
            smoke[-1]["error"] = why
        self.results["smoke"] = smoke

    def target(self, arm: Arm, lane: str, shape: str) -> sc.Target | None:
        """`target()`, unless the arm is down, failed this check, or sits this lane out."""
        if not arm.up or arm.died or f"{lane}/{shape}" in arm.skipped:
            return None
        if arm.name == "litellm" and lane not in self.plan.peer_lanes:
            return None
        if arm.name == "replica" and (shape != "json" or lane not in self.plan.replica_lanes):
            return None  # replica mode: throughput and c=1 latency, against aistack's
        if arm.name == "before" and shape != "json":
            return None  # an older tree: throughput and c=1 latency, against aistack's
        return target(arm, lane, shape)

    def targets(
        self, lane: str, shape: str, arms: list[Arm] | None = None
    ) -> Iterator[tuple[Arm, sc.Target]]:
        for arm in arms or self.arms.values():
            t = self.target(arm, lane, shape)
            if t is not None:
                yield arm, t

    def order(self, rnd: int) -> list[Arm]:
        arms = list(self.arms.values())
        return arms if rnd % 2 == 0 else arms[::-1]

    def gateway_procs(self) -> list[Proc]:
        return [a.proc for a in self.arms.values() if a.up and a.proc and a.name != "direct"]

    def warm_up(self, n: int = 20) -> None:
        """A few requests of every kind on every arm, then the idle RSS."""
        targets = [
            t for lane in LANES for sh in ("json", "stream") for _, t in self.targets(lane, sh)
        ]

        async def run_all() -> None:
            for t in targets:
                await sc.run_streams(t, 1, n, timeout=10)

        sc.run(run_all())
        settle(self.gateway_procs())
        self.results["idle_rss_warm"] = {
            a.name: a.proc.rss() for a in self.arms.values() if a.up and a.proc
        }

    # rounds -------------------------------------------------------------------------------------

    def record(self, test: str, lane: str, arm: str, rnd: int, values: dict[str, float]) -> None:
        self.records.append({"test": test, "lane": lane, "arm": arm, "round": rnd, **values})

    def one_round(self, rnd: int) -> None:
        p = self.plan
        for arm in self.arms.values():
            if arm.up and not arm.died and arm.proc and not arm.proc.alive():
                arm.died = f"exited before round {rnd + 1}: {arm.proc.tail()}"
                log(f"{arm.name} {arm.died}")
        arms = self.order(rnd)
        procs = self.gateway_procs()
        for lane in LANES if "rps" in p.tests else ():  # throughput
            for arm, t in self.targets(lane, "json", arms):
                secs = p.peer_rps_s if arm.name == "litellm" else p.rps_s
                self.record("rps", lane, arm.name, rnd, wrk(t, p.conc, secs))
                settle(procs)
        for lane in p.lat_lanes if "c1" in p.tests else ():  # latency at c=1
            for arm, t in self.targets(lane, "json", arms):
                self.record("c1", lane, arm.name, rnd, wrk(t, 1, p.lat_s))
                settle(procs)
        for lane in ("oa>oa", "ol>ol") if p.big and "big" in p.tests else ():  # 500 KB, c=1
            for arm, t in self.targets(lane, "big", arms):
                self.record("big", lane, arm.name, rnd, wrk(t, 1, p.lat_s))
                settle(procs)
        if "ttft" in p.tests:
            self.ttft_round(rnd, arms)
            settle(procs)
        for lane in p.gap_lanes if "gap" in p.tests else ():  # paced streams, many at once
            for arm, t in self.targets(lane, "paced", arms):
                streams = sc.run_streams(t, p.gap_conns, p.gap_per_conn, timeout=30, spread=PACED)
                res = sc.run(streams)
                self.record("gap", lane, arm.name, rnd, stream_stats(res, t.framing))
                settle(procs)

    def ttft_round(self, rnd: int, arms: list[Arm]) -> None:
        pairs = []
        for lane in self.plan.ttft_lanes:
            d = self.target(self.arms["direct"], floor_lane(lane), "stream")
            for arm, t in self.targets(lane, "stream", arms):
                if arm.name != "direct" and d is not None:
                    pairs.append((arm.name, lane, d, t))
        out = sc.run(paired_ttft(pairs, self.plan.ttft_pairs))
        for (arm_name, lane), values in out.items():
            self.record("ttft", lane, arm_name, rnd, values)

    # the ledgers keep up -------------------------------------------------------------------------

    def ledgers(self) -> None:
        """After the rounds: rows in each arm's ledger against the requests it answered
        (its own /metrics), and how long after the last request the two were equal."""
        out: dict[str, object] = {}
        t_end = time.perf_counter()
        for name, auth, count_rows in (
            ("aistack", aistack_auth, lambda: replicas.sqlite_rows(AISTACK_DB)),
            ("replica", replica_auth, self.replica.rows if self.replica else None),
        ):
            arm = self.arms[name]
            if not arm.up or arm.died or count_rows is None:
                continue
            answered = replicas.answered(arm.port, auth)
            rows, lag = replicas.wait_rows(count_rows, answered, since=t_end)
            out[name] = {"requests": answered, "rows": rows, "lag_s": lag}
            log(f"ledger {name}: {rows} rows for {answered} requests, equal after {lag:.2f} s")
        self.results["ledgers"] = out

    # memory -------------------------------------------------------------------------------------

    def restart(self, arm: Arm) -> str:
        """A fresh process for `arm`; the reason if it does not come back."""
        assert arm.proc is not None
        arm.proc = respawn(arm.proc)
        wait = self.plan.litellm_wait if arm.name == "litellm" else self.plan.ready_wait
        return wait_ready(arm.proc, arm.port, wait)[1]

    def memory(self) -> None:
        """RSS of a fresh gateway process holding N long streams at once, against its idle RSS
        just before. Fresh, because CPython keeps freed memory for reuse: a process that has run
        the rounds (or the other lane) would hold the streams in memory it already has."""
        n = self.plan.mem_streams
        out: list[dict[str, object]] = []
        gateways = [self.arms[a] for a in ("nginx", "aistack", "litellm")]
        for lane in ("oa>oa", "ol>ol"):
            for arm, t in self.targets(lane, "long", gateways):
                row: dict[str, object] = {"arm": arm.name, "lane": lane, "streams": n}
                out.append(row)
                why = self.restart(arm)
                proc = arm.proc
                if why or proc is None:
                    row["error"] = f"did not restart: {why}"
                    log(f"memory {arm.name} {lane}: {row['error']}")
                    continue
                warm = [self.target(arm, lane, s) for s in ("json", "stream")]
                for w in warm:
                    if w is not None:
                        sc.run(sc.run_streams(w, 1, 10, timeout=10))
                settle([proc])
                idle = proc.rss()
                held = sc.run(sc.hold_streams(t, n, proc.rss, settle=1.0, open_timeout=30))
                time.sleep(1.0)
                settle([proc], limit=5)
                row.update(asdict(held))
                row.update({"idle_rss": idle, "after_rss": proc.rss()})
                row["per_stream_kb"] = (held.sample - idle) / max(held.open_at_sample, 1) / 1024
                log(
                    f"memory {arm.name} {lane}: {held.open_at_sample}/{n} open, "
                    f"{idle / 2**20:.1f} -> {held.sample / 2**20:.1f} MiB, "
                    f"{row['per_stream_kb']:.1f} KB/stream"
                )
        self.results["memory"] = out

    # bookkeeping --------------------------------------------------------------------------------

    def litellm_connects(self) -> None:
        trace = OUT / "litellm-connect.log"
        if not trace.exists():
            return
        mock, other = 0, []
        for line in trace.read_text(errors="replace").splitlines():
            if "connect(" not in line or "AF_UNIX" in line:
                continue
            if f"htons({MOCK_PORT})" in line and '"127.0.0.1"' in line:
                mock += 1
            else:
                other.append(line.split("connect(", 1)[1][:160])
        self.results["litellm_connects"] = {"to_mock": mock, "other": other}
        if other:
            log(f"LiteLLM connected somewhere other than the mock: {other[:3]}")

    def meta(self, started: float) -> dict[str, object]:
        def run(cmd: list[str]) -> str:
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=ROOT)
            except (OSError, subprocess.TimeoutExpired):
                return "?"
            return (done.stdout + done.stderr).strip()

        cpu = "?"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
        versions = {
            "nginx": run(["nginx", "-v"]).split("/")[-1],
            "echo module": run(["dpkg-query", "-W", "-f=${Version}", "libnginx-mod-http-echo"]),
            "wrk": run(["wrk", "-v"]).split(" [")[0].split("/")[-1],
            "python": platform.python_version(),
        }
        py = "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))"
        if AISTACK_BIN.exists():
            venv_py = str(AISTACK_BIN.parent / "python")
            for pkg in ("aistack", "uvloop", "httptools", "orjson", "msgspec"):
                versions[pkg] = run([venv_py, "-c", py, pkg]).splitlines()[-1]
        if LITELLM_BIN.exists():
            versions["litellm"] = run([str(LITELLM_BIN.parent / "python"), "-c", py, "litellm"])
        commit = run(["git", "rev-parse", "--short", "HEAD"])
        dirty = run(["git", "status", "--porcelain", "--", "src"])
        debian = Path("/etc/debian_version")
        return {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "mode": self.plan.mode,
            "plan": asdict(self.plan),
            "duration_s": time.perf_counter() - started,
            "machine": {
                "cpu": cpu,
                "cpus": os.cpu_count(),
                "memory_gib": round(mem_kb / 2**20, 1),
                "kernel": platform.release(),
                "os": f"Debian {debian.read_text().strip()}"
                if debian.exists()
                else platform.platform(),
            },
            "versions": versions,
            "commit": commit + (" + uncommitted changes in src/" if dirty else ""),
            "arms": {
                a.name: {"status": a.status, "skipped": a.skipped, "died": a.died}
                for a in self.arms.values()
            },
        }

    def run(self) -> dict[str, object]:
        started = time.perf_counter()
        try:
            self.setup()
            for arm in self.arms.values():
                log(f"arm {arm.name}: {arm.status}")
            self.smoke()
            self.warm_up()
            for rnd in range(self.plan.rounds):
                log(f"round {rnd + 1}/{self.plan.rounds}")
                self.one_round(rnd)
            self.ledgers()
            if "workers" in self.plan.tests and self.with_aistack:
                self.results["workers"] = workers.run(self, log)
            if self.plan.mem_streams and "mem" in self.plan.tests:
                self.memory()
            if "sched" in self.plan.tests:
                self.results["scheduler"] = scheduler_lane()
            if "llm" in self.plan.tests and self.with_aistack:
                try:
                    self.results["embedded"] = embedded.run(self.plan.mode == "quick", log)
                except Exception as e:
                    self.results["embedded"] = {"error": f"{type(e).__name__}: {e}"}
            if "vec" in self.plan.tests:
                # The vector store's lane (bench/vectors.py): a gateway of its own.
                self.results["vectors"] = vectors.run(quick=self.plan.mode == "quick", log=log)
            self.results["idle_rss_end"] = {
                a.name: a.proc.rss() for a in self.arms.values() if a.up and a.proc
            }
        finally:
            for proc in reversed(STARTED):
                proc.stop()
            shutil.rmtree(OUT / "pids", ignore_errors=True)
            if self.replica is not None:
                self.replica.drop()
        self.litellm_connects()
        self.results["meta"] = self.meta(started)
        return self.results


def scheduler_lane() -> dict[str, object]:
    """bench/scheduler.py (in process): what the scheduler's empty queue adds a request."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "scheduler.py"), "--rounds", "9"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=BENCH,
    )
    rows: dict[str, object] = {"output": done.stdout.strip()}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in ("plain", "loaded", "gpu"):
            rows[parts[0]] = {"us": float(parts[1]), "extra_us": float(parts[2])}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the under-a-minute subset")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument(
        "--only", help=f"comma-separated subset of {','.join(TESTS)} (results are partial)"
    )
    parser.add_argument("--write-docs", action="store_true", help="rewrite docs/performance.md")
    parser.add_argument("--no-litellm", action="store_true", help="leave the peer arm out")
    parser.add_argument("--no-aistack", action="store_true", help="leave the gateway arm out")
    parser.add_argument(
        "--before",
        type=Path,
        help="an older tree (a git worktree with its own .venv) to run as the arm `before`",
    )
    parser.add_argument(
        "--aistack-config",
        type=Path,
        default=BENCH / "configs" / "aistack.yaml",
        help="the gateway's config (it must keep the bench's models and port 18434)",
    )
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    if args.rounds:
        plan = Plan(**{**asdict(plan), "rounds": args.rounds})
    if args.only:
        unknown = set(args.only.split(",")) - set(TESTS)
        if unknown:
            parser.error(f"--only: unknown {', '.join(sorted(unknown))}; pick from {TESTS}")
        tests = tuple(t for t in TESTS if t in args.only.split(","))
        plan = Plan(**{**asdict(plan), "tests": tests})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop what we started, then exit
    bench = Bench(
        plan,
        with_litellm=not args.no_litellm,
        with_aistack=not args.no_aistack,
        aistack_config=args.aistack_config.resolve(),
        before_tree=args.before.resolve() if args.before else None,
    )
    results = bench.run()
    OUT.mkdir(exist_ok=True)
    raw = OUT / f"results-{plan.mode}.json"
    raw.write_text(json.dumps(results, indent=1, default=str))
    text = report.render(results)
    (OUT / f"report-{plan.mode}.md").write_text(text)
    print()
    print(report.render(results, brief=True) if args.quick else text)
    if args.write_docs and (args.only or args.quick):
        log("docs/performance.md left as it is: a partial or quick run does not replace it")
    elif args.write_docs:
        report.write_docs(ROOT / "docs" / "performance.md", text)
        log("docs/performance.md updated")
    log(f"raw results: {raw.relative_to(ROOT)}; took {results['meta']['duration_s']:.0f} s")  # type: ignore[index]


if __name__ == "__main__":
    main()
