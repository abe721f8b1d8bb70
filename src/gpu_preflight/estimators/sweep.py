"""The peak as one workload quantity grows: context length, image side, frames or (micro-)batch.

A sweep reuses one loaded model (api.prepare_estimate) and asks the chosen engine for one report
per point through the function its caller passes (api.report_for with point_only=True, the code
path of `preflight estimate`), so a point of the curve is exactly what the estimate says for that
workload. Where a target GPU stops
fitting between two points, the sweep bisects between them, so the marked crossing is the largest
swept value the engine says fits (to the quantity's step).

The result is a plain dict (`gpu-preflight.curve`, docs/plots.md) that render/plot.py draws and the
local page (`preflight serve`) serves as JSON. Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from gpu_preflight.errors import PreflightError, UsageError

CURVE_SCHEMA = "gpu-preflight.curve"
CURVE_SCHEMA_VERSION = 1
MAX_POINTS = 200
DEFAULT_POINTS = 16
STOP_FACTOR = 2   # the default range stops once the peak passes this many times the largest target's memory
MIN_POINTS = 6
# breakdown parts that belong to another moment than the forward pass (transformers' loading transient
# of on-the-fly quantization): left out of the stack when the parts would otherwise exceed the peak
OTHER_MOMENT = {"load_transient"}
CONTEXT_CAP = 131072  # the largest context swept when the model names no limit (annotate.CONTEXT_SEARCH_CAP)


@dataclass(frozen=True)
class Quantity:
    name: str      # what --plot-sweep calls it
    label: str     # the x axis title
    unit: str
    log: bool      # a log2 axis (context, batch) or a linear one (image side, frames)
    step: int      # crossings are bisected down to this resolution (context: relative, see _close_enough)


QUANTITIES = {
    "context": Quantity("context", "context length (tokens)", "tokens", True, 1),
    "side": Quantity("side", "image side (pixels, square image)", "px", False, 16),
    "frames": Quantity("frames", "frames per denoiser call", "frames", False, 1),
    "batch": Quantity("batch", "batch", "", True, 1),
}


# ---------------------------------------------------------------- which quantity an engine sweeps

def available(engine) -> list[str]:
    """The quantities `engine` can sweep, from the options it declares."""
    dests = {o.dest for o in engine.options}
    out = []
    if dests & {"ctx", "seq_len", "input_len"}:
        out.append("context")
    if {"height", "width"} <= dests:
        out.append("side")
    if "frames" in dests:
        out.append("frames")
    if dests & {"micro_batch", "batch"}:
        out.append("batch")
    return out


def default_quantity(engine, base: dict[str, Any], source=None) -> str:
    """Context for LLM inference engines, micro-batch for training, frames for a video pipeline
    (its defaults name a frame count), else the image side."""
    names = available(engine)
    dests = {o.dest for o in engine.options}
    if "micro_batch" in dests:
        return "batch"
    if "side" in names:
        return "frames" if video_frames(source, base) and "frames" in names else "side"
    if names:
        return names[0]
    raise UsageError(f"--engine {engine.name} declares no option this plot can sweep",
                     hint="sweepable: context (--input-len / --ctx / --seq-len), --height and --width, --frames, --batch")


def video_frames(source, base: dict[str, Any]) -> int | None:
    """The pipeline's default frame count when it is a video pipeline, else None."""
    defaults = (getattr(source, "metadata", None) or {}).get("defaults") or {}
    return _int(defaults.get("frames")) or _int((base.get("workload") or {}).get("frames"))


def batch_dest(engine) -> str:
    return "micro_batch" if engine.option("micro_batch") else "batch"


def context_dest(engine) -> str:
    for dest in ("ctx", "seq_len", "input_len"):
        if engine.option(dest):
            return dest
    raise UsageError(f"--engine {engine.name} has no context option")


def apply(q: str, engine, opts: dict[str, Any], given: dict[str, Any], x: int) -> dict[str, Any]:
    """The options of the point at x. `given`: what the user set (a vLLM --max-model-len the user
    gave stays; otherwise each point reserves exactly its context)."""
    o = dict(opts)
    if q == "context":
        dest = context_dest(engine)
        if dest == "input_len":
            o["input_len"] = x - int(o.get("output_len") or 0)
            if engine.option("max_model_len") and given.get("max_model_len") is None:
                o["max_model_len"] = x
        else:
            o[dest] = x
    elif q == "side":
        o["height"] = o["width"] = x
    elif q == "frames":
        o["frames"] = x
    elif q == "batch":
        o[batch_dest(engine)] = x
    return o


def swept_dests(q: str, engine, given: dict[str, Any]) -> set[str]:
    """The options apply() sets for quantity q: a curve does not depend on their values."""
    if q == "context":
        dest = context_dest(engine)
        extra = {"max_model_len"} if dest == "input_len" and engine.option("max_model_len") and \
            given.get("max_model_len") is None else set()
        return {dest} | extra
    return {"side": {"height", "width"}, "frames": {"frames"}}.get(q) or {batch_dest(engine)}


def applies(q: str, engine, opts: dict[str, Any], given: dict[str, Any]) -> dict[str, int]:
    """dest -> offset: the point at x sets each dest to x - offset (what a slider on the page does)."""
    out = {}
    for dest in sorted(swept_dests(q, engine, given)):
        out[dest] = int(opts.get("output_len") or 0) if dest == "input_len" else 0
    return out


def current_value(q: str, engine, opts: dict[str, Any], base: dict[str, Any], source=None) -> int | None:
    """Where the user's own workload sits on the x axis."""
    w = base.get("workload") or {}
    if q == "context":
        dest = context_dest(engine)
        if dest == "input_len":
            return int(opts["input_len"]) + int(opts.get("output_len") or 0)
        return _int(opts.get(dest)) or _int(w.get("n_ctx")) or _int(w.get(dest))
    if q == "side":
        h, wd = _int(w.get("height")) or _int(opts.get("height")), _int(w.get("width")) or _int(opts.get("width"))
        return max(h or 0, wd or 0) or None
    if q == "frames":
        return _int(opts.get("frames")) or _int(w.get("frames")) or video_frames(source, base)
    return _int(opts.get(batch_dest(engine))) or _int(w.get(batch_dest(engine)))


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 else None


def lower_bound(q: str, engine, opts: dict[str, Any]) -> int:
    if q == "context" and context_dest(engine) == "input_len":
        return int(opts.get("output_len") or 0) + 1
    return 1


def context_limit(base: dict[str, Any]) -> int:
    arch = base.get("architecture") or {}
    return int(arch.get("max_position_embeddings") or arch.get("context_train") or CONTEXT_CAP)


def default_values(q: str, engine, opts: dict[str, Any], base: dict[str, Any], source=None) -> list[int]:
    cur = current_value(q, engine, opts, base, source) or 1
    lo = lower_bound(q, engine, opts)
    if q == "context":
        top = max(context_limit(base), cur)
        start = max(256, 1 << max(lo - 1, 1).bit_length())
        values = []
        v = start
        while v < top:
            values += [v, v * 3 // 2] if v * 3 // 2 < top else [v]
            v *= 2
        values.append(top)
    elif q == "side":
        top = max(2048, cur)
        values = list(range(256, top + 1, 128))
    elif q == "frames":
        top = max(2 * cur, 16)
        step = max(1, -(-top // 20))
        values = list(range(1, top + 1, step))
    else:
        values = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]
        values += [v for v in (96, 128, 192, 256) if v <= 2 * cur]
    return sorted({v for v in values + [cur] if v >= lo})


# ---------------------------------------------------------------- --plot-sweep SPEC

def parse_spec(text: str | None) -> tuple[str | None, list[int] | None, tuple[int, int, int] | None]:
    """`[NAME=]A:B[:N]` (N points from A to B), `[NAME=]V1,V2,...` or `NAME`; a trailing k means x1024.
    Returns (quantity name or None, the values listed or None, the range (A, B, N) or None)."""
    if text is None or not str(text).strip():
        return None, None, None
    text = str(text).strip()
    name, _, rest = text.partition("=") if "=" in text else ("", "", text)
    name = name.strip().lower().replace("-", "_")
    if not name and rest.strip().lower().replace("-", "_") in QUANTITIES | {"micro_batch": None}:
        name, rest = rest.strip().lower().replace("-", "_"), ""
    if name == "micro_batch":
        name = "batch"
    if name and name not in QUANTITIES:
        raise UsageError(f"--plot-sweep: unknown quantity {name!r}", hint="use one of " + ", ".join(QUANTITIES))
    if not rest.strip():
        return name or None, None, None
    if ":" in rest:
        parts = rest.split(":")
        if len(parts) not in (2, 3):
            raise UsageError(f"--plot-sweep {text!r}: a range is FROM:TO or FROM:TO:POINTS",
                             hint="e.g. --plot-sweep 1024:65536 or --plot-sweep side=512:2048:13")
        a, b = _count(parts[0], text), _count(parts[1], text)
        n = _count(parts[2], text) if len(parts) == 3 else DEFAULT_POINTS
        if a >= b:
            raise UsageError(f"--plot-sweep {text!r}: FROM must be below TO", hint="e.g. --plot-sweep 1024:65536")
        if not 2 <= n <= MAX_POINTS:
            raise UsageError(f"--plot-sweep {text!r}: POINTS must be 2 to {MAX_POINTS}")
        return name or None, None, (a, b, n)
    values = sorted({_count(v, text) for v in rest.split(",") if v.strip()})
    if not values or len(values) > MAX_POINTS:
        raise UsageError(f"--plot-sweep {text!r}: give 1 to {MAX_POINTS} values", hint="e.g. --plot-sweep batch=1,2,4,8")
    return name or None, values, None


def _count(text: str, whole: str) -> int:
    t = text.strip().lower().replace("_", "")
    mult = 1024 if t.endswith("k") else 1
    t = t[:-1] if t.endswith("k") else t
    try:
        n = int(t) * mult
    except ValueError:
        raise UsageError(f"--plot-sweep {whole!r}: {text.strip()!r} is not a whole number",
                         hint="numbers like 4096 or 32k (= 32768)") from None
    if not 1 <= n <= 10_000_000:
        raise UsageError(f"--plot-sweep {whole!r}: {n} is out of range (1 to 10,000,000)")
    return n


def spaced(a: int, b: int, n: int, q: Quantity) -> list[int]:
    """n values from a to b: geometric on a log axis, even on a linear one."""
    if q.log:
        out = [round(a * (b / a) ** (i / (n - 1))) for i in range(n)]
    else:
        out = [round(a + (b - a) * i / (n - 1)) for i in range(n)]
    return sorted(set(out))


# ---------------------------------------------------------------- what the stack is made of

def stack_of(report: dict[str, Any]) -> dict[str, int] | None:
    """The parts of the plotted peak, in bytes, in drawing order; None when the report's parts do
    not add up to its peak (only the total is drawn then).

    Pipelines: the peak phase's resident weights, transient activations, allocator reserve and CUDA
    context (annotate.pipeline_peak_breakdown). vLLM: what the workload needs inside vLLM's budget
    (weights, activation profile, non-torch memory, CUDA graphs when they count against the budget,
    and the KV cache of batch x context tokens); the rest of the budget holds more KV blocks.
    Others: the report's breakdown, plus "other" for any part of the peak it does not name."""
    pb = report.get("peak_breakdown")
    if pb:
        return {"weights (resident)": int(pb["resident_bytes"]), "activations": int(pb["transient_bytes"]),
                "allocator reserve": int(pb["allocator_reserve_bytes"]),
                "cuda_context_and_libraries": int(pb["cuda_context_and_libraries"])}
    v = report.get("vllm")
    if report.get("engine") == "vllm" and isinstance(v, dict):
        w = report.get("workload") or {}
        tokens = int(w.get("batch") or 1) * (int(w.get("input_len") or 0) + int(w.get("output_len") or 0))
        out = {"weights": int(v["weights_bytes"]), "activations": int(v["activation_bytes"]),
               "non_torch": int(v["non_torch_bytes"])}
        if v.get("cuda_graphs_in_budget"):
            out["cuda_graphs"] = int(v["cuda_graph_bytes"])
        out["kv_cache"] = tokens * int(report.get("kv_bytes_per_token") or 0)
        return out
    parts = {k: int(val) for k, val in (report.get("breakdown") or {}).items()
             if isinstance(val, (int, float)) and not isinstance(val, bool) and val > 0}
    peak = int(report.get("peak_process_bytes") or 0)
    total = sum(parts.values())
    rest = "other"
    if total > peak * 1.005:  # a part of another moment (loading) that is not at the forward's peak
        parts = {k: v for k, v in parts.items() if k not in OTHER_MOMENT}
        total, rest = sum(parts.values()), "loading peak above the forward's"
    if not parts or total > peak * 1.005:
        return None
    if peak > total:
        parts[rest] = peak - total
    return parts


def stack_total(report: dict[str, Any]) -> int:
    s = stack_of(report)
    return sum(s.values()) if s else int(report.get("peak_process_bytes") or 0)


# ---------------------------------------------------------------- the sweep

def _point(report: dict[str, Any], x: int) -> dict[str, Any]:
    stack = stack_of(report)
    return {"x": x, "peak_process_bytes": int(report.get("peak_process_bytes") or 0),
            "total_bytes": sum(stack.values()) if stack else int(report.get("peak_process_bytes") or 0),
            "stack": stack,
            "fits": [bool(f.get("fits")) for f in report.get("fits") or []],
            "peak_per_gpu_bytes": [int(f.get("peak_process_bytes_per_gpu") or 0) for f in report.get("fits") or []]}


def sweep(plan, point: Callable[[dict[str, Any]], dict[str, Any]], *, given: dict[str, Any] | None = None,
          spec: str | None = None, base: dict[str, Any] | None = None, refine: bool = True) -> dict[str, Any]:
    """The curve of `plan` (api.EstimatePlan: .engine, .opts, .source). `point(opts)` builds the
    estimate report for one set of options (api.report_for with point_only). `spec`: --plot-sweep;
    `base`: the report at the user's own workload when the caller already has it; `given`: the
    options the user set."""
    given = given or {}
    engine, opts = plan.engine, dict(plan.opts)
    base = base or point(opts)
    name, values, rng = parse_spec(spec)
    values_given = values
    names = available(engine)
    q = name or default_quantity(engine, base, plan.source)
    if q not in names:
        raise UsageError(f"--plot-sweep {q}: --engine {engine.name} cannot sweep {q}",
                         hint="it sweeps " + (", ".join(names) or "nothing"))
    lo = lower_bound(q, engine, opts)
    values = values or (spaced(*rng, QUANTITIES[q]) if rng else default_values(q, engine, opts, base, plan.source))
    if values[0] < lo:
        raise UsageError(f"--plot-sweep: {q} must be at least {lo} here" +
                         (f" (the output length is {opts.get('output_len')} tokens)" if q == "context" else ""),
                         hint=f"e.g. --plot-sweep {q}={lo}:{max(lo * 64, values[-1])}")
    points: dict[int, dict[str, Any]] = {}
    skipped: list[dict[str, Any]] = []

    def run(x: int) -> dict[str, Any] | None:
        if x in points:
            return points[x]
        try:
            rep = point(apply(q, engine, opts, given, x))
        except PreflightError as exc:
            skipped.append({"x": x, "reason": exc.message})
            return None
        points[x] = _point(rep, x)
        return points[x]

    explicit = bool(values_given or rng)
    ceiling = STOP_FACTOR * max((f["memory_bytes"] for f in base.get("fits") or []), default=0)
    cut = None
    for x in values:
        p = run(x)
        if not explicit and ceiling and p is not None and len(points) >= MIN_POINTS and p["total_bytes"] > ceiling:
            cut = x if x != values[-1] else None  # the default range stops once the peak is well past every GPU
            break
    cur = current_value(q, engine, opts, base, plan.source)
    if cut is not None and cur and cur > cut:
        run(cur)
    targets = [{"gpu": f["gpu"], "gpu_id": f.get("gpu_id"), "count": f["count"], "memory_bytes": f["memory_bytes"]}
               for f in base.get("fits") or []]
    for i, t in enumerate(targets):
        t.update(_crossing(i, points, run, QUANTITIES[q], refine))
    ordered = [points[x] for x in sorted(points)]
    qd = QUANTITIES[q]
    return {
        "schema": CURVE_SCHEMA, "schema_version": CURVE_SCHEMA_VERSION,
        "model": base.get("model"), "engine": base.get("engine"), "kind": base.get("kind"),
        "quantity": {"name": q, "label": _label(qd, engine), "unit": qd.unit, "scale": "log2" if qd.log else "linear",
                     "step": qd.step, "sets": _sets(q, engine, given)},
        "applies": applies(q, engine, opts, given),
        "current": current_value(q, engine, opts, base, plan.source),
        "workload": base.get("workload"),
        "components": _components(ordered),
        "points": ordered,
        "skipped": sorted(skipped, key=lambda s: s["x"]),
        "targets": targets,
        "line": "vllm_budget" if base.get("engine") == "vllm" else "peak_per_gpu",
        "notes": _notes(q, engine, given, base) + ([f"the default range stops at {cut:,}, where the peak passes "
                                                     f"{STOP_FACTOR}x the largest GPU's memory (--plot-sweep sets it)"]
                                                   if cut is not None else []),
    }


def _close_enough(q: Quantity, a: int, b: int) -> bool:
    if q.name == "context":
        return b - a <= max(1, a // 256)
    return b - a <= q.step


def _crossing(i: int, points: dict[int, dict], run, q: Quantity, refine: bool) -> dict[str, Any]:
    xs = sorted(points)
    ok = [points[x]["fits"][i] for x in xs if i < len(points[x]["fits"])]
    if not ok:
        return {"status": "unknown", "last_fit": None, "first_fail": None}
    if all(ok):
        return {"status": "fits_throughout", "last_fit": xs[-1], "first_fail": None}
    if not ok[0]:
        return {"status": "never_fits", "last_fit": None, "first_fail": xs[0]}
    j = ok.index(False)
    a, b = xs[j - 1], xs[j]
    while refine and not _close_enough(q, a, b):
        mid = (a + b) // 2
        if q.step > 1:
            mid = max(a + 1, mid // q.step * q.step)
            if mid >= b:
                break
        p = run(mid)
        if p is None:
            break
        a, b = (mid, b) if p["fits"][i] else (a, mid)
    return {"status": "stops", "last_fit": a, "first_fail": b}


def _components(points: list[dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    for p in points:
        for k in p["stack"] or {}:
            if k not in seen:
                seen.append(k)
    return seen


def _label(q: Quantity, engine) -> str:
    if q.name == "batch":
        return "micro-batch (sequences per GPU per step)" if batch_dest(engine) == "micro_batch" else \
            "batch (images per prompt)" if engine.option("height") else "batch (sequences)"
    if q.name == "context":
        return {"input_len": "context length (tokens: prompt + output)", "ctx": "context size -c (tokens)",
                "seq_len": "sequence length (tokens)"}[context_dest(engine)]
    return q.label


def _sets(q: str, engine, given: dict[str, Any]) -> list[str]:
    """The flags each point sets."""
    if q == "context":
        dest = context_dest(engine)
        if dest == "input_len":
            extra = ["--max-model-len"] if engine.option("max_model_len") and given.get("max_model_len") is None else []
            return ["--input-len (context - output length)"] + extra
        return [engine.option(dest).flag]
    if q == "side":
        return ["--height", "--width"]
    if q == "frames":
        return ["--frames"]
    return [engine.option(batch_dest(engine)).flag]


def _notes(q: str, engine, given: dict[str, Any], base: dict[str, Any]) -> list[str]:
    out = []
    if base.get("engine") == "vllm":
        out.append("vLLM: the stack is what this workload needs inside vLLM's budget (gpu_memory_utilization x the "
                   "GPU's total); the dashed line per GPU is that budget, the rest of which holds more KV blocks")
        if q == "context" and given.get("max_model_len") is None:
            out.append("each point sets --max-model-len to its context")
    if stack_of(base) is None:
        out.append("the engine's breakdown does not add up to its peak here: only the total is drawn")
    return out


def crossing_label(t: dict[str, Any], unit: str) -> str:
    """"fits up to 23,456 tokens" and the like, for renderers."""
    u = f" {unit}" if unit else ""
    if t["status"] == "fits_throughout":
        return f"fits across the range (to {t['last_fit']:,}{u})"
    if t["status"] == "never_fits":
        return "does not fit at any swept value"
    if t["status"] == "stops":
        return f"fits up to {t['last_fit']:,}{u}, not at {t['first_fail']:,}"
    return "no verdict"
