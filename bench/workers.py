"""1 worker against 2 for `make bench` (test `workers`): `server.workers` on this box.

Two gateways with the bench's configuration, one with `server.workers: 1` and one with
`2` (the vector store off in both: more than one worker needs it off or remote), each on
a fresh SQLite ledger and key of its own, both up at once on their own ports and neither
pinned: a worker may run on either CPU. The mock and wrk stay pinned to CPU 0 as in the
rest of the run (`taskset -c 0`), so the two workers share CPU 0 with the load: on a
2-CPU machine nothing better is possible, and the second worker gets what the load
leaves of CPU 0. Per round, in alternating order, `wrk -c64` on OpenAI -> openai for the
run's window; req/s, and the gateway's CPU time per request (its whole process tree,
the supervisor included), which says what the second worker costs per request whatever
the CPU it got: equal CPU per request means N cores serve N times as much.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import yaml


def run(bench: Any, log: Any) -> dict[str, Any]:
    import os

    import payloads
    import run as r
    import streamclient as sc

    tick = os.sysconf("SC_CLK_TCK")
    arms: dict[int, tuple[Any, sc.Target]] = {}
    try:
        for n in (1, 2):
            cfg = yaml.safe_load(Path(bench.aistack_config).read_text())
            cfg.setdefault("server", {})["workers"] = n
            cfg["vectors"] = {"enabled": False}
            config = r.OUT / f"aistack-workers-{n}.yaml"
            config.write_text(yaml.safe_dump(cfg, sort_keys=False))
            env = {**r.AISTACK_ENV, "AISTACK_BENCH_DB": str(r.OUT / f"aistack-workers-{n}.db")}
            key = r.mint_key(config, env)
            if key is None:
                return {"error": "keys create failed (see bench/out/logs)"}
            port = r.WORKERS_PORT + n - 1
            cmd = [str(r.AISTACK_BIN), "serve", "--config", str(config)]
            cmd += ["--host", "127.0.0.1", "--port", str(port)]
            proc = r.spawn(f"aistack-workers-{n}", cmd, None, env)
            ready, why = r.wait_ready(proc, port, 30)
            if ready is None:
                return {"error": f"{n} workers: {why}"}
            body = payloads.openai_request(r.model("oa", "json"), stream=False)
            t = sc.Target(port, r.CLIENT_PATHS["oa"], body, sc.JSON, f"Bearer {key}")
            arms[n] = (proc, t)
            sc.run(sc.run_streams(t, 8, 50, timeout=10))  # warm every worker up
        rows: list[dict[str, float]] = []
        for rnd in range(bench.plan.workers_rounds):
            for n in (1, 2) if rnd % 2 == 0 else (2, 1):
                proc, t = arms[n]
                r.settle([proc])
                before = proc.cpu_ticks()
                got = r.wrk(t, bench.plan.conc, bench.plan.rps_s)
                cpu_s = (proc.cpu_ticks() - before) / tick
                per = cpu_s / got["requests"] * 1e6 if got["requests"] else float("nan")
                rows.append({"round": rnd, "workers": n, "rps": got["rps"], "cpu_us": per,
                             "errors": got["errors"]})  # fmt: skip
                log(f"workers={n}: {got['rps']:,.0f} req/s, {per:.0f} us CPU a request")
    finally:
        for proc, _ in arms.values():
            proc.stop()
    out: dict[str, Any] = {"rows": rows}
    ratios, cpu = [], []
    for rnd in range(bench.plan.workers_rounds):
        one = next(x for x in rows if x["round"] == rnd and x["workers"] == 1)
        two = next(x for x in rows if x["round"] == rnd and x["workers"] == 2)
        ratios.append(two["rps"] / one["rps"])
        cpu.append(two["cpu_us"] / one["cpu_us"])
    out["ratio"] = statistics.median(ratios)
    out["ratio_range"] = [min(ratios), max(ratios)]
    out["cpu_ratio"] = statistics.median(cpu)
    for n in (1, 2):
        out[f"rps_{n}"] = statistics.median(x["rps"] for x in rows if x["workers"] == n)
        out[f"cpu_us_{n}"] = statistics.median(x["cpu_us"] for x in rows if x["workers"] == n)
    out["errors"] = sum(x["errors"] for x in rows)
    return out
