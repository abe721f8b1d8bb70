"""Benchmark: how fast `preflight serve` answers a change on the page, for every catalog model.

Starts the server in this process on 127.0.0.1 (a free port) and sends what the page sends over
HTTP, one request at a time, wall clock per request as the client sees it:
- POST /api/point   the verdict, breakdown bar and command lines (sent on every change);
- POST /api/curve   the curve when only the swept value moved (served from the cache: the page's
                    slider) and once per model when the curve is computed (first request);
- POST /api/estimate the full report (largest context / batch, suggestions), sent after the page
                    settles; recorded, not part of the per-change figure.
Changes per model: LLMs (transformers and vllm) prompt 512 / 2048 / 8192 tokens at batch 1 and 4,
(llama.cpp, the predicted Q4_K_M GGUF) context 2048 / 8192 / 32768; pipelines 512 / 1024 / 1536 px
square. Target GPU: rtx-4090 (and l4 as a second target for one
pass). Usage: python bench/serve_latency.py [--json OUT.json] [--models a,b]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))


CPU_MS: list[float] = []  # CPU time of the server thread for the last request (time.thread_time)


def post(conn, path: str, body: dict) -> tuple[float, int]:
    t = time.perf_counter()
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    r.read()
    return (time.perf_counter() - t) * 1000, r.status


def timed_app(App):
    class Timed(App):
        def handle(self, method, target, body=b""):
            t = time.thread_time()
            try:
                return super().handle(method, target, body)
            finally:
                CPU_MS.append((time.thread_time() - t) * 1000)
    return Timed


def changes(kind: str, engine: str) -> list[dict]:
    if kind == "pipeline":
        return [{"height": s, "width": s} for s in (512, 1024, 1536)]
    if engine == "llama.cpp":
        return [{"ctx": n} for n in (2048, 8192, 32768)]
    return [{"input_len": n, "batch": b} for b in (1, 4) for n in (512, 2048, 8192)]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", help="write every timing here")
    ap.add_argument("--models", help="comma list of catalog ids (default: all)")
    args = ap.parse_args()

    from gpu_preflight import __version__
    from gpu_preflight.models.catalog import default_catalog
    from gpu_preflight.serve.app import App
    from gpu_preflight.serve.server import PreflightServer

    load_start = os.getloadavg()[0]
    srv = PreflightServer("127.0.0.1", 0, timed_app(App)(offline=True))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=120)
    wanted = set(args.models.split(",")) if args.models else None
    rows = []
    for e in sorted(default_catalog().entries, key=lambda e: (e.kind, e.id)):
        if wanted and e.id not in wanted:
            continue
        kind = "pipeline" if e.kind == "diffusion" else "llm"
        engines = ["diffusers"] if kind == "pipeline" else ["transformers", "vllm", "llama.cpp"]
        for engine in engines:
            for gpus in (["rtx-4090"], ["rtx-4090", "l4"]):
                base = {"model": e.id, "engine": engine, "gpus": gpus}
                if engine == "llama.cpp":
                    base["quant"] = "Q4_K_M"  # the GGUF llama.cpp would load, predicted from the config
                first_curve, status = post(conn, "/api/curve", base)
                if status != 200:
                    rows.append({"model": e.id, "engine": engine, "gpus": gpus, "error": status})
                    continue
                for ch in changes(kind, engine):
                    point, s1 = post(conn, "/api/point", {**base, **ch})
                    point_cpu = CPU_MS[-1]
                    curve, s2 = post(conn, "/api/curve", {**base, "at": next(iter(ch.values()))})
                    full, s3 = post(conn, "/api/estimate", {**base, **ch})
                    rows.append({"model": e.id, "engine": engine, "gpus": gpus, "change": ch, "point_ms": point, "point_cpu_ms": point_cpu,
                                 "curve_cached_ms": curve, "estimate_ms": full, "first_curve_ms": first_curve,
                                 "status": [s1, s2, s3]})
    srv.shutdown()
    ok = [r for r in rows if "error" not in r and r["status"] == [200, 200, 200]]
    env = {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
           "gpu_preflight": __version__, "platform": platform.platform(),
           "load_average_1min": [load_start, os.getloadavg()[0]]}
    print(f"{env['cpu']}, {env['cores']} cores, Python {env['python']}, load average {load_start:.1f} at the "
          f"start, {env['load_average_1min'][1]:.1f} at the end")
    print(f"{len(ok)} changes over {len({r['model'] for r in ok})} models ({len(rows) - len(ok)} failed)")
    print("| engine | changes | /api/point median | p95 | max | over 100 ms | server CPU per point: median | max | "
          "cached curve median | full estimate median | p95 | curve computed median |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for engine in ("transformers", "vllm", "llama.cpp", "diffusers"):
        sel = [r for r in ok if r["engine"] == engine]
        if not sel:
            continue
        pts = sorted(r["point_ms"] for r in sel)
        full = sorted(r["estimate_ms"] for r in sel)
        p95 = pts[int(0.95 * (len(pts) - 1))]
        firsts = sorted({(r["model"], tuple(r["gpus"])): r["first_curve_ms"] for r in sel}.values())
        cpu = sorted(r["point_cpu_ms"] for r in sel)
        print(f"| {engine} | {len(sel)} | {statistics.median(pts):.1f} ms | {p95:.1f} ms | {pts[-1]:.1f} ms | "
              f"{sum(p > 100 for p in pts)} | {statistics.median(cpu):.1f} ms | {cpu[-1]:.1f} ms | "
              f"{statistics.median(r['curve_cached_ms'] for r in sel):.1f} ms | "
              f"{statistics.median(full):.0f} ms | {full[int(0.95 * (len(full) - 1))]:.0f} ms | "
              f"{statistics.median(firsts):.0f} ms |")
    slow = sorted({(r["model"], r["engine"]) for r in ok if r["point_ms"] > 100})
    if slow:
        print("over 100 ms (/api/point): " + ", ".join(f"{m} ({e})" for m, e in slow))
    heavy = sorted({(r["model"], r["engine"]) for r in ok if r["point_cpu_ms"] > 100})
    print("over 100 ms of server CPU (/api/point): " + (", ".join(f"{m} ({e})" for m, e in heavy) or "none"))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"env": env, "rows": rows}, fh, separators=(",", ":"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
