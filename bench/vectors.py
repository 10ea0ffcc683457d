"""The vector store's lane of `make bench` (test `vec`): search through aistack against the
Qdrant engine called in process.

Both sides hold the same 10k 384-d points (Cosine), indexed (HNSW), with the machine's
CPUs (not pinned: the engine's search pool thrashes on one core of two, and the
in-process pool's threads could not be pinned alike): the gateway's collection is
indexed by its background optimizer, the in-process shard by `optimize()` here. Then,
per round, in alternating order: 1k searches (limit 10) one at a time through
`POST /qdrant/collections/bench/points/query` on a kept-alive connection, and the same
1k searches as `EdgeShard.query` calls in this process. Two figures, the issue's budgets:

- added p50 at c=1: the median search through aistack less the median in process (<= 1 ms);
- the 1k searches' total through aistack over the engine's own total (<= 2x).

The client is a raw socket with the requests prebuilt, so its own cost is a few
microseconds of the added figure. Runs alone as `python bench/vectors.py [--quick]`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
AISTACK = ROOT / ".venv" / "bin" / "aistack"
PORT = 18633
KEY = "bench-vectors-master-key-0123456789"


class Raw:
    """HTTP/1.1 over one kept-alive socket: prebuilt requests, bodies by Content-Length."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    @staticmethod
    def request(method: str, path: str, body: bytes) -> bytes:
        head = (
            f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\napi-key: {KEY}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    def send(self, req: bytes) -> tuple[int, bytes]:
        self.sock.sendall(req)
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        while len(self.buf) < length:
            self.buf += self.sock.recv(65536)
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, body


def _wait(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError("the gateway did not start")


def run(quick: bool = False, log: Any = print) -> dict[str, Any]:
    import numpy as np
    import qdrant_edge as q

    n, dim = 10_000, 384
    searches = 200 if quick else 1000
    rounds = 1 if quick else 3
    rng = np.random.default_rng(20)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    queries = rng.normal(size=(searches, dim)).astype(np.float32).tolist()
    work = Path(tempfile.mkdtemp(prefix="aistack-bench-vectors-"))
    cfg = work / "aistack.yaml"
    cfg.write_text(
        json.dumps(
            {
                "backends": [],
                "auth": {"master_key": KEY},
                "logging": {"requests": False},
                "console": {"enabled": False},
                "vectors": {"path": str(work / "vec"), "optimize_threshold": 1000,
                            "optimize_idle": 3},
            }
        )
    )  # fmt: skip
    env = {**os.environ, "AISTACK_CONFIG": "", "XDG_DATA_HOME": str(work / "data")}
    # Not pinned: the engine's search pool on one core of two thrashes, and an in-process
    # baseline cannot be pinned the same way (its pool threads are not this thread).
    cmd = [str(AISTACK), "serve", "--config", str(cfg), "--port", str(PORT)]
    gw_log = (work / "gateway.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=gw_log, stderr=subprocess.STDOUT)
    out: dict[str, Any] = {"points": n, "dim": dim, "searches": searches, "rounds": rounds}
    try:
        _wait(PORT, proc)
        c = Raw(PORT)
        body = {"vectors": {"size": dim, "distance": "Cosine"}}
        status, answer = c.send(
            c.request("PUT", "/qdrant/collections/bench", json.dumps(body).encode())
        )
        assert status == 200, answer
        for i in range(0, n, 1000):
            pts = [{"id": j, "vector": x[j].tolist()} for j in range(i, i + 1000)]
            req = c.request("PUT", "/qdrant/collections/bench/points?wait=true",
                            json.dumps({"points": pts}).encode())  # fmt: skip
            status, answer = c.send(req)
            assert status == 200, answer
        # The in-process shard: the same points and configuration, indexed here.
        shard = q.EdgeShard.create(
            str(work / "edge"),
            q.EdgeConfig(vectors=q.EdgeVectorParams(size=dim, distance=q.Distance.Cosine)),
        )
        for i in range(0, n, 1000):
            shard.update(q.UpdateOperation.upsert_points(
                [q.Point(j, x[j].tolist()) for j in range(i, i + 1000)]
            ))  # fmt: skip
        shard.optimize()
        log("vectors: waiting for the gateway's background index")
        deadline = time.monotonic() + 300
        while True:
            status, answer = c.send(c.request("GET", "/qdrant/collections/bench", b""))
            info = json.loads(answer)["result"]
            if info["indexed_vectors_count"] >= n and info["status"] == "green":
                break
            if time.monotonic() > deadline:
                tail = (work / "gateway.log").read_text(errors="replace")[-1500:]
                raise TimeoutError(f"the gateway never indexed the collection: {info}\n{tail}")
            time.sleep(0.5)
        reqs = [
            c.request("POST", "/qdrant/collections/bench/points/query",
                      json.dumps({"query": v, "limit": 10}).encode())
            for v in queries
        ]  # fmt: skip
        for r in reqs[:50]:  # warm both
            c.send(r)
        for v in queries[:50]:
            shard.query(q.QueryRequest(limit=10, query=q.Query.Nearest(v)))
        via: list[list[float]] = []
        inproc: list[list[float]] = []

        def through_aistack() -> None:
            times = []
            for r in reqs:
                t = time.perf_counter()
                status, _ = c.send(r)
                times.append(time.perf_counter() - t)
                assert status == 200
            via.append(times)

        def in_process() -> None:
            times = []
            for v in queries:
                t = time.perf_counter()
                shard.query(q.QueryRequest(limit=10, query=q.Query.Nearest(v)))
                times.append(time.perf_counter() - t)
            inproc.append(times)

        for rnd in range(rounds):
            order = (through_aistack, in_process) if rnd % 2 == 0 else (in_process, through_aistack)
            for f in order:
                f()
        p50_via = statistics.median(statistics.median(t) for t in via)
        p50_in = statistics.median(statistics.median(t) for t in inproc)
        totals = [sum(a) / sum(b) for a, b in zip(via, inproc, strict=True)]
        out.update(
            {
                "aistack_p50_ms": p50_via * 1e3,
                "engine_p50_ms": p50_in * 1e3,
                "added_p50_ms": (p50_via - p50_in) * 1e3,
                "aistack_total_s": statistics.median(sum(t) for t in via),
                "engine_total_s": statistics.median(sum(t) for t in inproc),
                "total_ratio": statistics.median(totals),
            }
        )
        shard.close()
        log(
            f"vectors: p50 {p50_via * 1e3:.3f} ms through aistack, {p50_in * 1e3:.3f} ms in "
            f"process; {searches} searches {out['total_ratio']:.2f}x the engine's own time"
        )
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
        log(f"vectors: {out['error']}")
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        gw_log.close()
        shutil.rmtree(work, ignore_errors=True)
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
