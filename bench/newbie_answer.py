"""The worked answer: NewBie-image-Exp0.1 at 1024x1024 on 24, 16, 12 and 8 GB cards, from measured modes only.

    python bench/newbie_answer.py > docs/newbie-image.md

Every peak in the card tables is a measurement (calibration/raw/diffusion-modes-*.jsonl, written by
bench/calibrate_diffusion_modes.py on the GPU machine): the NVML process peak of the run's phases,
the host RSS peak, and the seconds per denoising step of the last measured step. A combination that
was not measured is not offered. Jina CLIP v2 (custom code, never run by gpu-preflight) could not be
built there: its 865M parameters (1.61 GiB in bfloat16) are added where the mode keeps it on the GPU,
and the table says so. Without records the script prints what is missing and exits 1.
"""

from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from gpu_preflight.compat import facts  # noqa: E402
from gpu_preflight.measure.calibration import load_records  # noqa: E402
from gpu_preflight.measure.calibration_diffusion import default_mode_paths  # noqa: E402

G = 1 << 30
PID = "newbie-image-exp0.1"
CARDS = [("rtx-4090", "24 GB"), ("rtx-4060-ti-16gb", "16 GB"), ("rtx-3060", "12 GB"), ("rtx-4060", "8 GB")]
JINA_BYTES = 865_000_000 * 2  # https://jina.ai/models/jina-clip-v2 (865M parameters), bfloat16

# (label, flags, [(setup, run predicate, phases or None)], Jina resident in which phases, cost)
# A "drop text encoders" answer needs the encode with the encoders alone: model offload's encode phase.
ENC_ALONE = ("model", lambda r: True, ["encode:text_encoder"])
ANSWERS = [
    ("as is", "", [("gpu", lambda r: not r["drop_text_encoders"] and not r["vae_tiling"] and r["attn"] == "sdpa", None)],
     "all", "none"),
    ("VAE in float32 as the official demo (decode measured; other phases as above)", "--component-dtype vae=float32",
     [("gpu_vae_fp32", lambda r: True, None),
      ("gpu", lambda r: not r["drop_text_encoders"] and not r["vae_tiling"] and r["attn"] == "sdpa",
       ["encode:text_encoder", "denoise"])], "all", "none (0.16 GiB more weights)"),
    ("encode first, free the text encoders", "--drop-text-encoders",
     [("gpu", lambda r: r["drop_text_encoders"] and not r["vae_tiling"], None), ENC_ALONE], "encode",
     "encoders reload (or stay in host RAM) for each new prompt"),
    ("free the text encoders + VAE tiling", "--drop-text-encoders --vae-tiling",
     [("gpu", lambda r: r["drop_text_encoders"] and r["vae_tiling"], None), ENC_ALONE], "encode",
     "as above; tiling does nothing at 1024x1024 (tile = 1024)"),
    ("fp8 layerwise casting of the DiT", "--layerwise-fp8",
     [("fp8", lambda r: not r["drop_text_encoders"], None)], "all", "a cast per layer per step"),
    ("fp8 DiT + free the text encoders + VAE tiling", "--layerwise-fp8 --drop-text-encoders --vae-tiling",
     [("fp8", lambda r: r["drop_text_encoders"], None), ENC_ALONE], "encode", "both of the above"),
    ("torchao int8 weight-only DiT and Gemma", "--quantize int8wo",
     [("int8wo", lambda r: not r["drop_text_encoders"], None)], "all", "int8 weight-only matmuls"),
    ("model CPU offload", "--offload model", [("model", lambda r: True, None)], "none",
     "every component crosses PCIe once per image"),
    ("group offload, block level, CUDA stream", "--offload group --use-stream",
     [("group_block_stream", lambda r: True, None)], "none", "blocks cross PCIe every step, overlapped"),
    ("group offload, block level, no stream", "--offload group", [("group_block", lambda r: True, None)], "none",
     "blocks cross PCIe every step"),
    ("group offload, leaf level, CUDA stream", "--offload group --group-type leaf_level --use-stream",
     [("group_leaf_stream", lambda r: True, None)], "none", "every layer crosses PCIe every step, overlapped"),
    ("sequential CPU offload", "--offload sequential", [("sequential", lambda r: True, None)], "none",
     "every layer crosses PCIe every step"),
]


def measured(paths: list[str]) -> tuple[list[dict], dict]:
    recs = load_records(paths)
    env = next((r for r in recs if r.get("type") == "env" and r.get("gpu")), {})
    phases = [r for r in recs if r.get("type") == "phase" and r.get("pipeline") == PID and "setup" in r
              and r.get("workload", {}).get("height") == 1024 and not r.get("error") and not r.get("oom")]
    return phases, env


def answer(phases: list[dict], sources, jina: str) -> dict | None:
    picked = []
    for setup, pred, names in sources:
        hit = [p for p in phases if p["setup"] == setup and pred(p) and (names is None or p["phase"] in names)]
        if not hit:
            return None
        picked += hit
    peak = max(picked, key=lambda p: p["peak_process_bytes"])
    gpu = peak["peak_process_bytes"]
    if jina == "all" or (jina == "encode" and peak["phase"].startswith("encode")):
        gpu += JINA_BYTES
    sps = [p.get("seconds_per_step") for p in picked if p["phase"] == "denoise" and p.get("seconds_per_step")]
    return {"gpu": gpu, "phase": peak["phase"], "host": max(p.get("peak_host_rss_bytes") or 0 for p in picked),
            "sps": sps[0] if sps else None}


def main() -> int:
    paths = default_mode_paths(ROOT)
    phases, env = measured(paths) if paths else ([], {})
    if not phases:
        print("no NewBie measurements at 1024x1024 in calibration/raw/diffusion-modes-*.jsonl: run "
              "bench/device_diffusion_modes.sh on the GPU machine first", file=sys.stderr)
        return 1
    rows = []
    for label, flags, sources, jina, cost in ANSWERS:
        a = answer(phases, sources, jina)
        if a is not None:
            rows.append((label, flags, cost, a))
    fastest = sorted((r for r in rows if r[3]["sps"]), key=lambda r: r[3]["sps"])
    print("# NewBie-image-Exp0.1 at 1024x1024: which settings fit which card (measured)\n")
    print(f"Every number below was measured on {env.get('gpu', '?')} (driver {env.get('driver', '?')}, torch "
          f"{env.get('torch', '?')}, diffusers {env.get('diffusers', '?')}, transformers {env.get('transformers', '?')}) "
          "with `bench/calibrate_diffusion_modes.py bench/matrix_diffusion_modes.json`: NewBie's DiT built as a "
          "Lumina2 transformer with its dimensions, Gemma-3-4B (with its vision tower, as demo.py loads it) and the "
          "FLUX VAE, uninitialized weights, one 1024x1024 image with the CFG batch of 2, 1-2 denoising steps. "
          "GPU = NVML process peak over the run's phases (what nvidia-smi shows); host = peak RSS of the process. "
          "Jina CLIP v2 is custom code and was not built: its 1.61 GiB (865M parameters, bfloat16) are added where "
          "the mode keeps it on the GPU. Seconds per step are the H200's, with its PCIe link: they rank the modes; "
          "a smaller card is slower in absolute terms. Reproduce: `python bench/newbie_answer.py`.\n")
    print("| setting | flags | GPU peak GiB | peak phase | host RSS GiB | s/step (H200) | what it costs |")
    print("|---|---|---|---|---|---|---|")
    for label, flags, cost, a in rows:
        sps = f"{a['sps']:.3f}" if a["sps"] else "-"
        print(f"| {label} | `{flags}` | {a['gpu'] / G:.2f} | {a['phase']} | {a['host'] / G:.2f} | {sps} | {cost} |")
    print("\n| card | fits (measured), fastest first | fastest that fits |\n|---|---|---|")
    for gpu_id, size in CARDS:
        row = facts.find_gpu(gpu_id)
        mem = facts.gpu_memory_bytes(row)
        fit = [r for r in fastest if r[3]["gpu"] <= mem] + [r for r in rows if not r[3]["sps"] and r[3]["gpu"] <= mem]
        names = ", ".join(f"{r[0]} ({r[3]['gpu'] / G:.2f} GiB)" for r in fit) or "nothing measured fits"
        best = f"{fit[0][0]}: `{fit[0][1]}`" if fit else "-"
        print(f"| {size} {row['name']} ({mem / G:.2f} GiB) | {names} | {best} |")
    print("\nNot measured, so not offered here: bitsandbytes 8-bit / NF4 (the package cannot be carried to the GPU "
          "machine; `preflight estimate` models it and docs/accuracy.md checks it against published figures).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
