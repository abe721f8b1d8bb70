"""Training measurements (calibration/raw/train-*.jsonl, written by bench/calibrate_train.py) vs
the training estimator (estimators/engines/training.py).

Every case is compared per phase (forward, backward, optimizer; the maximum over the case's
steps) on torch's allocated peak and, on a GPU, on the process peak (NVML) against the
estimator's reserved peak plus the process overhead. Held-out models (bench/matrix_train.json
"held_out") were chosen before any comparison and are reported apart.
"""

from __future__ import annotations

import json
import os
import statistics
from typing import Any

from gpu_preflight.measurement.calibration import cal_dir, load_records

PHASES = ("forward", "backward", "optimizer")


def held_out(root: str) -> set[str]:
    with open(os.path.join(root, "bench", "matrix_train.json"), encoding="utf-8") as fh:
        return set(json.load(fh).get("held_out", {}).get("models", []))


def default_paths(root: str) -> list[str]:
    raw = os.path.join(cal_dir(root), "raw")
    return sorted(os.path.join(raw, f) for f in os.listdir(raw) if f.startswith("train-") and f.endswith(".jsonl"))


def setup_of(case: dict, device: str):
    from gpu_preflight.estimators.engines.training import TrainSetup

    targets = case.get("lora_targets") or ["all-linear"]
    return TrainSetup(mode=case["mode"], micro_batch=case["micro_batch"], seq_len=case["seq_len"],
                      grad_ckpt=bool(case.get("grad_ckpt")), optimizer=case.get("optimizer", "adamw"),
                      mixed_precision=case.get("mixed_precision", "bf16"),
                      param_dtype=case.get("param_dtype", "bfloat16"), lora_rank=int(case.get("lora_rank", 16)),
                      lora_targets=tuple(targets if isinstance(targets, list) else [targets]), device=device)


def measured_cases(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(model, case name) -> {"case", "config", "env", "phases": {phase: {allocated, reserved, process}}}."""
    configs: dict[str, dict] = {}
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        if r.get("type") == "load" and r.get("config"):
            configs[r["model"]] = r["config"]
        if r.get("type") != "phase" or r.get("oom") or r.get("phase") not in PHASES:
            continue
        key = (r["model"], r["case"]["name"])
        c = out.setdefault(key, {"case": r["case"], "config": configs.get(r["model"]), "env": r.get("_env") or {},
                                 "file": r.get("_file"), "phases": {}, "sdpa_backend": r.get("sdpa_backend"),
                                 "trainable_params": r.get("trainable_params")})
        if r["phase"] == "forward" and r.get("step") == 0 and r.get("before"):
            b = r["before"]
            c["start_cached"] = max(b.get("reserved_bytes", 0) - b.get("allocated_bytes", 0), 0)
        p = c["phases"].setdefault(r["phase"], {"allocated": 0, "reserved": 0, "process": 0})
        p["allocated"] = max(p["allocated"], r["peak_allocated_bytes"])
        p["reserved"] = max(p["reserved"], r["peak_reserved_bytes"])
        p["process"] = max(p["process"], r.get("peak_process_bytes") or 0)
    return out


def compare(records: list[dict[str, Any]], root: str, overhead_bytes: int | None = None) -> list[dict[str, Any]]:
    """One row per (model, case, phase) plus one per case for its whole-step peak ("step")."""
    from gpu_preflight.estimators.arch import parse_llm
    from gpu_preflight.estimators.engines.training import replay, shape_from_arch, train_process_overhead

    hold = held_out(root)
    rows = []
    for (model, name), c in sorted(measured_cases(records).items()):
        if not c["config"]:
            continue
        env = c["env"]
        device = env.get("device", "cuda")
        cc = tuple(int(x) for x in str(env.get("capability", "9.0")).split(".")) if device == "cuda" else None
        if overhead_bytes is None and device == "cuda":
            overhead, _ = train_process_overhead(cc, env.get("torch"))
        else:
            overhead = overhead_bytes or 0
        est = replay(shape_from_arch(parse_llm(c["config"])), setup_of(c["case"], device), cc)
        for phase in PHASES + ("step",):
            if phase == "step":
                m = {k: max(p[k] for p in c["phases"].values()) for k in ("allocated", "reserved", "process")}
                e = {"alloc": max(p["alloc"] for p in est.phases.values()),
                     "reserved": max(p["reserved"] for p in est.phases.values())}
            elif phase in c["phases"] and phase in est.phases:
                m, e = c["phases"][phase], est.phases[phase]
            else:
                continue
            row = {"model": model, "case": name, "phase": phase, "mode": c["case"]["mode"],
                   "grad_ckpt": bool(c["case"].get("grad_ckpt")), "seq_len": c["case"]["seq_len"],
                   "micro_batch": c["case"]["micro_batch"], "optimizer": c["case"].get("optimizer"),
                   "param_dtype": c["case"].get("param_dtype"), "device": device,
                   "measured_allocated_bytes": m["allocated"], "estimated_allocated_bytes": e["alloc"],
                   "allocated_error": (e["alloc"] - m["allocated"]) / m["allocated"] if m["allocated"] else 0.0,
                   "held_out": model in hold, "sdpa_backend": c["sdpa_backend"], "file": c["file"],
                   "gpu": env.get("gpu"), "torch": env.get("torch"), "transformers": env.get("transformers"),
                   "peft": env.get("peft"), "driver": env.get("driver"), "start_cached_bytes": c.get("start_cached")}
            if device == "cuda" and m["process"]:
                est_proc = e["reserved"] + overhead
                row.update(measured_reserved_bytes=m["reserved"], estimated_reserved_bytes=e["reserved"],
                           measured_process_bytes=m["process"], estimated_process_bytes=est_proc,
                           process_error=(est_proc - m["process"]) / m["process"])
            rows.append(row)
    return rows


BARS = {"median": 0.05, "worst": 0.12}   # the target: peak per GPU within 5 % median, 12 % worst


def summarize(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    errs = [abs(r[key]) for r in rows if key in r]
    if not errs:
        return {"cases": 0}
    return {"cases": len(errs), "median_abs": statistics.median(errs), "worst_abs": max(errs),
            "models": len({r["model"] for r in rows if key in r})}


def overhead_fit(rows: list[dict[str, Any]]) -> float | None:
    """Median of measured process minus measured reserved over the step rows that are not held out:
    the one constant a GPU run may set (CUDA context, kernels, cuBLAS / cuDNN handles)."""
    diffs = overhead_samples(rows, held=False)
    return statistics.median(diffs) if diffs else None


def overhead_samples(rows: list[dict[str, Any]], held: bool) -> list[int]:
    return sorted(r["measured_process_bytes"] - r["measured_reserved_bytes"] for r in rows
                  if r["phase"] == "step" and r["held_out"] == held and "measured_process_bytes" in r)


def load(paths: list[str]) -> list[dict[str, Any]]:
    return load_records(paths)


def _sets(step: list[dict[str, Any]], gpu: bool) -> list[tuple[str, list[dict[str, Any]]]]:
    rest = "not held out (set the process-overhead constant)" if gpu else "not held out"
    return [("held out (chosen before comparing; set no constant)", [r for r in step if r["held_out"]]),
            (rest, [r for r in step if not r["held_out"]]),
            ("every case", step),
            ("full fine-tuning", [r for r in step if r["mode"] == "full"]),
            ("LoRA", [r for r in step if r["mode"] == "lora"]),
            ("gradient checkpointing", [r for r in step if r["grad_ckpt"]]),
            ("no checkpointing", [r for r in step if not r["grad_ckpt"]])]


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%"


def markdown(rows: list[dict[str, Any]], title: str) -> str:
    """The docs/accuracy.md training section: summary by set, per phase, then every case's whole-step peak."""
    step = [r for r in rows if r["phase"] == "step"]
    gpu = any("process_error" in r for r in step)
    key = "process_error" if gpu else "allocated_error"
    out = [title, ""]
    if gpu:
        out += ["| set | cases | models | median abs error, process | worst abs error, process | within 5 % / 12 % | "
                "median abs error, allocated | worst abs error, allocated |", "|---|---|---|---|---|---|---|---|"]
    else:
        out += ["| set | cases | models | median abs error | worst abs error | median abs error, allocated |",
                "|---|---|---|---|---|---|"]
    for name, rs in _sets(step, gpu):
        a, b = summarize(rs, key), summarize(rs, "allocated_error")
        if not a["cases"]:
            continue
        if gpu:
            ok = a["median_abs"] <= BARS["median"] and a["worst_abs"] <= BARS["worst"]
            out.append(f"| {name} | {a['cases']} | {a['models']} | {_pct(a['median_abs'])} | {_pct(a['worst_abs'])} | "
                       f"{'yes' if ok else 'no'} | {_pct(b['median_abs'])} | {_pct(b['worst_abs'])} |")
        else:
            out.append(f"| {name} | {a['cases']} | {a['models']} | {_pct(a['median_abs'])} | {_pct(a['worst_abs'])} | "
                       f"{_pct(b['median_abs'])} |")
    if gpu:
        out += ["", "Per phase (each phase's peak over both steps; held out and not held out together):", "",
                "| phase | rows | median abs error, process | worst | median abs error, allocated | worst |",
                "|---|---|---|---|---|---|"]
        for ph in PHASES:
            rs = [r for r in rows if r["phase"] == ph]
            a, b = summarize(rs, "process_error"), summarize(rs, "allocated_error")
            if a["cases"]:
                out.append(f"| {ph} | {a['cases']} | {_pct(a['median_abs'])} | {_pct(a['worst_abs'])} | "
                           f"{_pct(b['median_abs'])} | {_pct(b['worst_abs'])} |")
        fit = overhead_samples(rows, held=False)
        held = overhead_samples(rows, held=True)
        if fit:
            mib = 1 << 20
            out += ["", (f"Process overhead (NVML process bytes minus torch's reserved bytes, per case): median "
                         f"{statistics.median(fit) / mib:.0f} MiB over the {len(fit)} cases not held out "
                         f"(spread {fit[0] / mib:.0f}-{fit[-1] / mib:.0f} MiB); the held-out cases, not used: median "
                         f"{statistics.median(held) / mib:.0f} MiB ({held[0] / mib:.0f}-{held[-1] / mib:.0f} MiB)."
                         if held else "")]
    big = max((r["measured_allocated_bytes"] for r in step), default=0) > (1 << 29)
    g, unit = (1 << 30, "GiB") if big else (1 << 20, "MiB")
    if gpu:
        out += ["", (f"| model | case | measured process {unit} | estimated {unit} | error | allocated measured | "
                     f"allocated estimated | error allocated | cached at the case's start {unit} | held out |"),
                "|---|---|---|---|---|---|---|---|---|---|"]
    else:
        out += ["", (f"| model | case | measured {unit} | estimated {unit} | error | allocated measured | "
                     "allocated estimated | error allocated | held out |"), "|---|---|---|---|---|---|---|---|---|"]
    for r in step:
        m = r.get("measured_process_bytes", r["measured_allocated_bytes"])
        e = r.get("estimated_process_bytes", r["estimated_allocated_bytes"])
        err = r.get("process_error", r["allocated_error"])
        cells = [r["model"], r["case"], f"{m / g:.3f}", f"{e / g:.3f}", f"{err * 100:+.1f}%",
                 f"{r['measured_allocated_bytes'] / g:.3f}", f"{r['estimated_allocated_bytes'] / g:.3f}",
                 f"{r['allocated_error'] * 100:+.1f}%"]
        if gpu:
            cells.append(f"{(r.get('start_cached_bytes') or 0) / g:.3f}")
        cells.append("yes" if r["held_out"] else "")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """python -m gpu_preflight.measurement.calibration_train [RECORDS.jsonl ...] (default calibration/raw/train-*.jsonl)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    paths = args or default_paths(root)
    rows = compare(load_records(paths), root)
    sys.stdout.write(markdown(rows, "## Fine-tuning: " + ", ".join(os.path.basename(p) for p in paths)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
