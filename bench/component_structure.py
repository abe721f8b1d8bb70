"""Write each catalog pipeline component's structure (what each diffusers mode moves) into its entry.

    python bench/component_structure.py [--check]

Every component with a config is built on the meta device with the installed diffusers /
transformers (models/component_params.py: count_on_meta) and its element counts are stored under
components.<name>.structure, with the versions used. --check only compares and exits 1 on a
difference. Components that cannot be built (custom code) are left without a structure; the
estimator then says which approximation it used.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from gpu_preflight.models.component_params import count_on_meta, summarize_blocks  # noqa: E402

MODELS = os.path.join(ROOT, "src", "gpu_preflight", "data", "models")
KEYS = ("parameters", "linear_weight_parameters", "linear_rows", "unquantized_linear_parameters",
        "layerwise_castable_parameters",
        "largest_leaf_parameters", "group_unmatched_parameters", "pinned_elements")


def structure(comp: dict) -> dict | None:
    try:
        s = count_on_meta(comp["class"], comp.get("config") or {}, comp)
    except LookupError:
        return None
    out = {k: s[k] for k in KEYS}
    out.update(summarize_blocks(s))
    out["source"] = f"counted on the meta device with {s['counted_with'].replace(' (meta device)', '')}" + \
        (f", built as {s['built_as']}" if s.get("built_as") and not s["built_as"].endswith("." + comp["class"]) else "") + \
        " (bench/component_structure.py)"
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    changed = []
    for fn in sorted(os.listdir(MODELS)):
        if not fn.endswith(".json"):
            continue
        path = os.path.join(MODELS, fn)
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        entry = json.loads(text)
        indent = 2 if text.startswith("{\n  \"") else 1
        if entry.get("kind") == "llm" or not entry.get("components"):
            continue
        for name, comp in entry["components"].items():
            if not isinstance(comp, dict) or not comp.get("config") or "Scheduler" in str(comp.get("class")):
                continue
            s = structure(comp)
            if s is None:
                continue
            old = comp.get("structure")
            if {k: v for k, v in (old or {}).items() if k != "source"} != {k: v for k, v in s.items() if k != "source"}:
                changed.append(f"{fn}:{name}")
                comp["structure"] = s
        if not args.check:
            with open(path, "w", encoding="utf-8") as fh:
                json.dump(entry, fh, indent=indent, ensure_ascii=False)
                fh.write("\n")
    print("\n".join(changed) or "no change")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    raise SystemExit(main())
