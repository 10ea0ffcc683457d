"""CPU per request of a gateway tree, measured so that a busy machine does not move it much.

`make bench` compares arms within rounds of wall-clock throughput; on a machine that other
work keeps busy that tells little. This measures what a change does to the gateway's own
work instead: the gateway (one process, the bench's config: key, limits, ledger, metrics,
logs, traces) in front of the bench's nginx mock, a fixed load from this process, and

  cpu       the gateway's CPU time (utime + stime of every thread, from /proc) over the
            requests answered, once its background work (ledger, logs, traces) has drained;
  callgrind instructions per request under valgrind (instrumentation switched on only
            around the measured requests): the same count on an idle or a busy machine;
  cprofile  a cProfile dump of the event loop's thread over the measured requests, left in
            the work folder (printed), for call counts per request.

Trees alternate (`--tree A --tree B`), each with its own .venv and bench config. Used for
docs/performance.md's "Choices, with numbers"; see `python bench/cpu.py --help`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import payloads
import streamclient as sc

BENCH = Path(__file__).resolve().parent
MOCK_PORT, GW_PORT = 28080, 28434
CLIENT_PATHS = {"oa": "/v1/chat/completions", "ol": "/api/chat", "an": "/v1/messages",
                "rs": "/v1/responses"}  # fmt: skip
REQUESTS = {"oa": payloads.openai_request, "ol": payloads.ollama_request,
            "an": payloads.anthropic_request, "rs": payloads.responses_request}  # fmt: skip
ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
# `aistack serve` with cProfile switched on by SIGUSR1 and dumped by SIGUSR2.
PROF_LAUNCH = """
import cProfile, os, signal, sys
prof = cProfile.Profile()
signal.signal(signal.SIGUSR1, lambda *_: prof.enable())
def dump(*_):
    prof.disable()
    prof.dump_stats(os.environ["PROF_OUT"])
signal.signal(signal.SIGUSR2, dump)
from aistack.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def log(msg: str) -> None:
    print(f"[cpu {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    """CPU seconds of `pid` so far, all its threads (utime + stime, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_port(port: int, proc: subprocess.Popen[bytes], limit: float) -> None:
    t0 = time.time()
    while time.time() - t0 < limit:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if proc.poll() is not None:
                sys.exit(f"exited {proc.returncode}")
            time.sleep(0.05)
    sys.exit(f"port {port} not up in {limit} s")


def settle(pid: int, quiet: float = 0.3, limit: float = 10.0) -> None:
    """Until the process stops using CPU: the ledger, logs and traces drained."""
    t0, last = time.time(), cpu_seconds(pid)
    while time.time() - t0 < limit:
        time.sleep(quiet)
        now = cpu_seconds(pid)
        if now - last <= 0.011:  # a tick at most: idle
            return
        last = now


class Mock:
    def __init__(self, work: Path) -> None:
        prefix = work / "mock"
        prefix.mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        values = {"PREFIX": str(prefix), "PORT": str(MOCK_PORT), "ECHO_MODULE": ECHO_MODULE}
        payloads.render(
            BENCH / "nginx" / "mock.conf.in", conf, {**values, **payloads.mock_values()}
        )
        self.proc = subprocess.Popen(
            ["nginx", "-p", f"{prefix}/", "-c", str(conf), "-e", str(prefix / "error.log")],
            start_new_session=True,
        )
        wait_port(MOCK_PORT, self.proc, 10)

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(10)


class Gateway:
    """One tree's gateway, fresh ledger and key, optionally under callgrind or in replica mode."""

    def __init__(self, tree: Path, work: Path, mode: str, replica: bool, tag: str) -> None:
        self.tree, self.mode = tree, mode
        binary = tree / ".venv" / "bin" / "aistack"
        text = (tree / "bench" / "configs" / "aistack.yaml").read_text()
        text = text.replace("18080", str(MOCK_PORT)).replace("18434", str(GW_PORT))
        db = work / f"{tag}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        self.env = {
            **os.environ,
            "AISTACK_BENCH_DB": str(db),
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{MOCK_PORT}/v1/traces",
            "OTEL_SERVICE_NAME": "aistack-bench",
        }
        config = work / f"{tag}.yaml"
        config.write_text(text)
        self.replica = None
        if replica:
            sys.path.insert(0, str(BENCH))
            import replicas

            self.replica = replicas.Replica(
                config,
                os.environ.get("AISTACK_BENCH_PG", "postgresql://127.0.0.1:5432/test"),
                os.environ.get("AISTACK_BENCH_REDIS", "redis://127.0.0.1:6379/0"),
                work,
                {},
            )
            config = self.replica.config
            self.env.update(self.replica.env)
            subprocess.run(
                [str(binary), "db", "upgrade", "--config", str(config)],
                env=self.env, check=True, capture_output=True,
            )  # fmt: skip
        keys = [str(binary), "keys", "create", "--name", "bench", "--json", "--config", str(config)]
        keys += ["--rpm", "1000000000", "--tpm", "2000000000"]
        done = subprocess.run(keys, env=self.env, capture_output=True, text=True, check=True)
        self.auth = "Bearer " + json.loads(done.stdout)["key"]
        cmd = [str(binary), "serve", "--config", str(config)]
        cmd += ["--host", "127.0.0.1", "--port", str(GW_PORT)]
        self.out = work / f"{tag}.callgrind"
        if mode == "cprofile":
            self.env["PROF_OUT"] = str(work / f"{tag}.prof")
            launch = work / "prof_launch.py"
            launch.write_text(PROF_LAUNCH)
            cmd = [str(tree / ".venv" / "bin" / "python"), str(launch), *cmd[1:]]
        if mode == "callgrind":
            cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                   f"--callgrind-out-file={self.out}", *cmd]  # fmt: skip
        self.log = (work / f"{tag}.log").open("wb")
        self.proc = subprocess.Popen(
            cmd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_port(GW_PORT, self.proc, 300 if mode == "callgrind" else 30)
        self.pid = self.proc.pid

    def target(self, lane: str, shape: str) -> sc.Target:
        client, backend = lane.split(">")
        stream = shape == "stream"
        kind = "json" if not stream else ("sse" if backend == "oa" else "nd")
        body = REQUESTS[client](f"bench-{backend}-{kind}", stream=stream)
        framing = (sc.NDJSON if client == "ol" else sc.SSE) if stream else sc.JSON
        return sc.Target(GW_PORT, CLIENT_PATHS[client], body, framing, self.auth)

    def callgrind(self, what: str) -> None:
        subprocess.run(["callgrind_control", what, str(self.pid)], check=True, capture_output=True)

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if self.replica is not None:
            self.replica.drop()


async def load(t: sc.Target, n: int, conc: int) -> int:
    """n requests over `conc` keep-alive connections; the number answered well."""
    ok = 0

    async def worker(count: int) -> None:
        nonlocal ok
        conn = sc.Conn(t)
        await conn.connect()
        try:
            for _ in range(count):
                r = await conn.send()
                if r.ok and (t.framing == sc.JSON or r.tokens == len(payloads.WORDS)):
                    ok += 1
        finally:
            conn.close()

    per = [n // conc + (1 if i < n % conc else 0) for i in range(conc)]
    await asyncio.gather(*(worker(c) for c in per))
    return ok


def wrk(t: sc.Target, conc: int, seconds: int, work: Path) -> int:
    body = work / "body.json"
    body.write_bytes(t.body)
    cmd = ["wrk", "-t1", f"-c{conc}", f"-d{seconds}s", "-s", str(BENCH / "wrk" / "post.lua")]
    cmd.append(f"http://127.0.0.1:{t.port}{t.path}")
    env = {**os.environ, "BENCH_BODY": str(body), "BENCH_AUTH": t.auth}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("BENCH "))
    r = json.loads(line[6:])
    errors = sum(r[k] for k in ("connect", "read", "write", "status", "timeout"))
    if errors:
        log(f"wrk: {errors} errors")
    return int(r["requests"]) - errors


def measure(gw: Gateway, lane: str, shape: str, n: int, conc: int, work: Path,
            use_wrk: bool) -> float:  # fmt: skip
    """µs of CPU (or instructions) per request."""
    t = gw.target(lane, shape)
    if gw.mode == "callgrind":
        sc.run(load(t, 200, conc))  # warm (uninstrumented)
        settle(gw.pid, quiet=1.0, limit=30)
        gw.callgrind("--instr=on")
        gw.callgrind("--zero")
        got = sc.run(load(t, n, conc))
        settle(gw.pid, quiet=1.0, limit=60)
        gw.callgrind("--dump")
        gw.callgrind("--instr=off")
        time.sleep(1)
        files = sorted(gw.out.parent.glob(gw.out.name + "*"), key=lambda p: p.stat().st_mtime)
        total = 0
        for line in files[-1].read_text(errors="replace").splitlines():
            if line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
        if not os.environ.get("CPU_KEEP"):
            for f in files:
                f.unlink()
        return total / max(got, 1)
    if gw.mode == "cprofile":
        sc.run(load(t, 500, conc))
        settle(gw.pid)
        os.kill(gw.pid, signal.SIGUSR1)
        got = sc.run(load(t, n, conc))
        settle(gw.pid)
        os.kill(gw.pid, signal.SIGUSR2)
        time.sleep(1)
        dump = f"{gw.env['PROF_OUT']}.{gw.tree.name}.{lane}.{shape}.{got}"
        os.rename(gw.env["PROF_OUT"], dump)
        log(f"cProfile dump: {dump}")
        return got
    if use_wrk:
        wrk(t, conc, 1, work)  # warm
        settle(gw.pid)
        c0 = cpu_seconds(gw.pid)
        got = wrk(t, conc, max(1, n), work)  # n: seconds
    else:
        sc.run(load(t, max(200, n // 10), conc))  # warm
        settle(gw.pid)
        c0 = cpu_seconds(gw.pid)
        got = sc.run(load(t, n, conc))
    settle(gw.pid)
    return (cpu_seconds(gw.pid) - c0) / max(got, 1) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tree", action="append", type=Path, help="a tree with .venv (repeatable)")
    ap.add_argument("--lane", action="append", help="client>backend, e.g. ol>oa (repeatable)")
    ap.add_argument("--shape", action="append", choices=["json", "stream"])
    ap.add_argument("--mode", choices=["cpu", "callgrind", "cprofile"], default="cpu")
    ap.add_argument("--n", type=int, default=5000, help="requests per measurement (wrk: seconds)")
    ap.add_argument("--conc", type=int, default=16)
    ap.add_argument("--wrk", action="store_true", help="load with wrk for --n seconds")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--replica", action="store_true", help="ledger on PostgreSQL, limits on Redis")
    args = ap.parse_args()
    trees = args.tree or [BENCH.parent]
    lanes, shapes = args.lane or ["oa>oa"], args.shape or ["json"]
    work = Path(tempfile.mkdtemp(prefix="aistack-cpu-"))
    mock = Mock(work)
    results: dict[str, list[float]] = {}
    try:
        for rnd in range(args.rounds):
            order = trees if rnd % 2 == 0 else trees[::-1]
            for i, tree in enumerate(order):
                gw = Gateway(tree, work, args.mode, args.replica, f"gw{i}")
                try:
                    for lane in lanes:
                        for shape in shapes:
                            v = measure(gw, lane, shape, args.n, args.conc, work, args.wrk)
                            key = f"{tree.name} {lane} {shape}"
                            results.setdefault(key, []).append(v)
                            log(f"round {rnd + 1}: {key}: {v:,.1f}")
                finally:
                    gw.stop()
    finally:
        mock.stop()
    units = {"callgrind": "instructions", "cpu": "µs CPU", "cprofile": "requests profiled"}
    unit = units[args.mode]
    print(f"{unit} per request, conc {args.conc}, median [min-max] of {args.rounds} rounds:")
    for key, vals in results.items():
        print(f"  {key:40s} {statistics.median(vals):>12,.1f} [{min(vals):,.1f}-{max(vals):,.1f}]")


if __name__ == "__main__":
    main()
