"""Issue 15: what each diffusers mode keeps on the GPU and in host RAM (estimator rules), the flags
that apply them, and the measurement child's modes run on the CPU with tiny configs."""

import json
import os
import subprocess
import sys

import pytest

from gpu_preflight.cli import main
from gpu_preflight.estimators.engines.diffusers import ImageWorkload, estimate_pipeline
from gpu_preflight.models.catalog import load_catalog

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
G = 1 << 30


def entry(name):
    return json.loads(json.dumps(load_catalog().find(name).raw))


def phases(e, **kw):
    return {p.name: p for p in estimate_pipeline(e, ImageWorkload(**kw)).phases}


def test_model_offload_holds_the_active_component_only():
    e = entry("flux.1-dev")
    p = phases(e, offload="model")
    s = {n: c["structure"]["parameters"] * 2 for n, c in e["components"].items() if c.get("structure")}
    # denoise: the transformer alone (+ the 32 MiB cuBLAS workspace); accelerate moves the previous
    # component to the CPU before this one leaves it, so at the switch every weight is in host RAM
    assert p["denoise"].resident_bytes == s["transformer"] + 32 * 1024 * 1024
    assert p["denoise"].host_bytes == sum(s.values())
    assert p["encode:text_encoder_2"].resident_bytes == s["text_encoder_2"] + 32 * 1024 * 1024


def test_sequential_offload_holds_the_largest_module_with_own_parameters():
    e = entry("flux.1-dev")
    p = phases(e, offload="sequential")
    leaf = e["components"]["transformer"]["structure"]["largest_leaf_parameters"]
    assert p["denoise"].resident_bytes == leaf * 2 + 32 * 1024 * 1024
    # every weight stays in the CPU state dict
    assert p["denoise"].host_bytes == sum(c["structure"]["parameters"] * 2 for c in e["components"].values()
                                          if c.get("structure"))


def test_group_offload_block_level_streams_and_text_encoders():
    e = entry("flux.1-dev")
    st = e["components"]["transformer"]["structure"]
    plain = phases(e, offload="group")
    stream = phases(e, offload="group", use_stream=True)
    ws = 32 * 1024 * 1024
    assert plain["denoise"].resident_bytes - ws == (st["group_unmatched_parameters"] + st["largest_block_parameters"]) * 2
    assert stream["denoise"].resident_bytes - ws == \
        (st["group_unmatched_parameters"] + st["largest_block_pair_parameters"]) * 2
    # T5 has no top-level ModuleList: block-level group offload onloads it whole
    t5 = e["components"]["text_encoder_2"]["structure"]["parameters"] * 2
    assert plain["encode:text_encoder_2"].resident_bytes - ws == t5
    # streams pin the block groups' weights (rounded up to powers of two by the caching host allocator);
    # the unmatched groups (T5 and CLIP whole, the transformer's embedders) have stream=None: not pinned.
    # The pageable originals are counted as kept (glibc keeps freed heap chunks): an upper bound
    weights = sum(c["structure"]["parameters"] * 2 for c in e["components"].values() if c.get("structure"))
    pinned = 0
    for name in ("transformer", "vae"):
        s = e["components"][name]["structure"]
        pinned += int(s["pinned_elements"] * 2 * (1 - s["group_unmatched_parameters"] / s["parameters"]))
    assert stream["denoise"].host_bytes == weights + pinned
    assert plain["denoise"].host_bytes == weights


def test_layerwise_fp8_keeps_norm_layers_in_16_bit():
    e = entry("flux.1-dev")
    st = e["components"]["transformer"]["structure"]
    est = estimate_pipeline(e, ImageWorkload(layerwise_fp8=True))
    cast = st["layerwise_castable_parameters"]
    assert est.weights["transformer"] == cast + (st["parameters"] - cast) * 2
    # FLUX's AdaLN linears live under norm1 / norm1_context / norm: a quarter of the weights stay bf16
    assert 0.25 < (st["parameters"] - cast) / st["parameters"] < 0.3


def test_published_flux_fp8_layerwise_after_loading():
    """Held out: the diffusers quantization blog (FLUX.1-dev, H100) printed max_memory_reserved after
    pipe.to('cuda') with the transformer in fp8 layerwise casting: 23.682 GB (GiB). The estimate's
    weights alone, without any constant fitted to it, land within 2 %."""
    est = estimate_pipeline(entry("flux.1-dev"), ImageWorkload(layerwise_fp8=True))
    assert abs(sum(est.weights.values()) / G - 23.682) / 23.682 < 0.02


def test_sdxl_float16_decodes_in_float32():
    e = entry("sdxl-base-1.0")
    fp16 = phases(e, dtype="float16")["vae_decode"]
    bf16 = phases(e, dtype="bfloat16")["vae_decode"]
    assert fp16.transient_bytes == 2 * bf16.transient_bytes
    vae = e["components"]["vae"]["structure"]["parameters"]
    assert fp16.resident_bytes - bf16.resident_bytes == vae * 2  # the fp32 copy replaces the fp16 one
    # FLUX's VAE has force_upcast too, but FluxPipeline does not upcast
    f = entry("flux.1-dev")
    assert phases(f, dtype="float16")["vae_decode"].transient_bytes == phases(f)["vae_decode"].transient_bytes


def test_vae_tiling_starts_above_the_vae_sample_size():
    e = entry("flux.1-dev")  # sample_size 1024: nothing to tile at 1024x1024
    assert phases(e, vae_tiling=True)["vae_decode"].transient_bytes == phases(e)["vae_decode"].transient_bytes
    big, tiled = phases(e, height=2048, width=2048), phases(e, height=2048, width=2048, vae_tiling=True)
    assert tiled["vae_decode"].transient_bytes < 0.35 * big["vae_decode"].transient_bytes


def test_component_dtype_vae_float32_doubles_its_weights_and_decode():
    e = entry("newbie-image-exp0.1")
    base, fp32 = phases(e), phases(e, component_dtype={"vae": "float32"})
    assert fp32["vae_decode"].transient_bytes == 2 * base["vae_decode"].transient_bytes
    assert estimate_pipeline(e, ImageWorkload(component_dtype={"vae": "float32"})).weights["vae"] == 83819683 * 4


def test_newbie_catalog_names_its_demo_vae_dtype():
    opt = entry("newbie-image-exp0.1")["options"]["official_demo"]
    assert opt["component_dtype"] == {"vae": "float32"} and opt["source"].startswith("https://")


def test_quantized_load_reserves_the_warmup():
    e = entry("flux.1-dev")
    est = estimate_pipeline(e, ImageWorkload(quantize="4bit"))
    t = e["components"]["transformer"]["structure"]["parameters"]
    # the transformer's warmup (numel // 4 bf16 elements) is larger than its NF4 weights
    assert est.load_peak_bytes >= t // 4 * 2
    assert est.load_peak_bytes > est.weights["transformer"] + est.weights["text_encoder_2"]


def test_flags_apply_the_modes_and_suggestions_carry_them(capsys):
    code = main(["estimate", "newbie-image-exp0.1", "--gpu", "rtx-4060", "--json"])
    r = json.loads(capsys.readouterr().out)
    assert code == 2 and r["suggestions"]
    s = r["suggestions"][0]
    argv = ["estimate", "newbie-image-exp0.1", "--gpu", "rtx-4060", "--json"] + s["flag"].split()
    assert main(argv) == 0
    r2 = json.loads(capsys.readouterr().out)
    assert r2["peak_process_bytes"] == s["peak_process_bytes"]
    main(["estimate", "flux.1-dev", "--gpu", "h100", "--json", "--offload", "group", "--use-stream",
          "--component-dtype", "vae=float32"])
    r3 = json.loads(capsys.readouterr().out)
    assert r3["workload"]["use_stream"] and r3["workload"]["component_dtype"] == {"vae": "float32"}
    assert r3["host_weights_bytes"] > 30 * G and r3["transfer_bytes_per_step"] > 20 * G


@pytest.mark.parametrize("argv,msg", [
    (["--use-stream"], "--use-stream applies to --offload group"),
    (["--offload", "group", "--record-stream"], "--record-stream needs --use-stream"),
    (["--component-dtype", "unet=float32"], "not a component of this pipeline"),
    (["--component-dtype", "vae:float32"], "is not NAME=DTYPE"),
])
def test_mode_flag_errors(capsys, argv, msg):
    assert main(["estimate", "flux.1-dev", "--gpu", "h100"] + argv) == 3
    assert msg in capsys.readouterr().err


# ------------------------------------------------------------------ the measurement child, on the CPU


@pytest.mark.skipif(not all(__import__("importlib").util.find_spec(m) for m in ("torch", "diffusers", "transformers",
                                                                                 "accelerate")),
                    reason="needs torch, diffusers, transformers and accelerate")
def test_modes_child_dry_run_on_cpu(tmp_path):
    """The GPU matrix's code paths, on tiny configs: placement with diffusers' own offload API,
    runs, undo/rebuild. Streams need CUDA: on the CPU those setups must record a clean error."""
    matrix = json.load(open(os.path.join(ROOT, "bench", "matrix_diffusion_modes.json")))
    sd3 = next(p for p in matrix["pipelines"] if p["id"] == "sd3.5-medium")
    sd3["setups"] = [{"template": "gpu", "name": "gpu", "runs": [
                          {"size": "1024", "phases": ["decode"], "vae_tiling": True},
                          {"size": "512", "drop_text_encoders": True, "steps": 1}]},
                     {"template": "model", "name": "model", "runs": [{"size": "512", "steps": 1}]},
                     {"template": "sequential", "name": "sequential", "runs": [{"size": "512", "phases": ["denoise"]}]},
                     {"template": "group_block_stream", "name": "group_block_stream", "runs": [{"size": "512"}]},
                     {"template": "fp8", "name": "fp8", "runs": [{"size": "512", "steps": 1, "phases": ["denoise"]}]}]
    matrix["pipelines"] = [sd3]
    mpath, out = tmp_path / "m.json", tmp_path / "out.jsonl"
    mpath.write_text(json.dumps(matrix))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "calibrate_diffusion_modes.py"), str(mpath),
                           str(out), "--tiny", "--device", "cpu", "--budget-s", "300"],
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    runs = [r for r in recs if r["type"] == "run"]
    assert {r["setup"] for r in runs} == {"gpu", "model", "sequential", "fp8"}
    assert all(not r["errors"] for r in runs), [r for r in runs if r["errors"]]
    drop = next(r for r in runs if r["drop_text_encoders"])
    assert "encode:text_encoder" not in drop["phases"] and "denoise" in drop["phases"]
    stream = next(r for r in recs if r.get("phase") == "setup:group_block_stream")
    assert "streams" in stream["error"]
    place = {r["setup"]: r["placement"] for r in recs if r["type"] == "placement"}
    assert "meta" in json.dumps(place["sequential"])  # accelerate keeps offloaded weights as meta tensors
    fp8 = [r for r in recs if r.get("phase") == "denoise" and r.get("setup") == "fp8"][0]
    assert fp8["seconds_per_step"] is not None and fp8["peak_host_rss_bytes"] > 0
    assert os.path.exists(str(out) + ".summary.txt")


def test_eager_attention_in_the_sdxl_unet_materializes_its_scores():
    """AttnProcessor: baddbmm input + scores, then scores + probabilities (2 x S x S per head, float16)
    at the first attention level of SDXL (down_blocks[1]: latents / 2, 10 heads), CFG batch 2 at
    1024x1024, with that level's activations beside them (tens of MB, not the SDPA peak's)."""
    e = entry("sdxl-base-1.0")
    eager = phases(e, dtype="float16", attn="eager")["denoise"]
    scores = 2 * 10 * (64 * 64) ** 2 * 2 * 2
    assert scores < eager.transient_bytes < scores + 256 * 1024 * 1024
    assert eager.cached_bytes == 0  # the up path's scores fit the down path's cached segments


# ------------------------------------------------------------------ rules found comparing with the H200 runs


def test_sd3_position_table_is_a_resident_buffer_and_stays_on_the_gpu_under_sequential_offload():
    """PatchEmbed registers pos_embed_max_size^2 x embed_dim as a persistent buffer; accelerate's
    cpu_offload with offload_buffers=False (what enable_sequential_cpu_offload passes for models with
    no parameters of their own) moves it to the GPU for good."""
    e = entry("sd3.5-medium")
    buf = 384 * 384 * 1536 * 2
    est = estimate_pipeline(e, ImageWorkload())
    assert est.weights["transformer"] == e["components"]["transformer"]["structure"]["parameters"] * 2 + buf
    seq = phases(e, offload="sequential")
    assert seq["encode:text_encoder_3"].resident_bytes >= buf + 32 * 1024 * 1024
    assert seq["vae_decode"].resident_bytes - 32 * 1024 * 1024 - buf == \
        e["components"]["vae"]["structure"]["largest_leaf_parameters"] * 2
    # a header count (diffusers folder) already holds the persistent buffer: not added twice
    e2 = entry("sd3.5-medium")
    e2["components"]["transformer"]["weights"] = {"parameters": 2243171520 + 384 * 384 * 1536,
                                                  "includes_buffers": True}
    assert estimate_pipeline(e2, ImageWorkload()).weights["transformer"] == est.weights["transformer"]


def test_sequential_offload_reserves_what_it_allocates():
    """accelerate empties the CUDA cache each time it places a weight: no allocator reserve."""
    for name in ("sdxl-base-1.0", "sonic", "flux.1-dev"):
        for p in estimate_pipeline(entry(name), ImageWorkload(offload="sequential")).phases:
            assert p.peak_reserved_bytes == p.peak_allocated_bytes, (name, p.name)
    resident = {p.name: p for p in estimate_pipeline(entry("flux.1-dev"), ImageWorkload()).phases}
    assert resident["vae_decode"].peak_reserved_bytes > resident["vae_decode"].peak_allocated_bytes


def test_lumina2_refiners_leave_their_score_blocks_cached():
    """Eager NewBie at 1024x1024 (CFG batch 2, 24 heads): the caption refiner (512 tokens), then the
    image refiner (4096), then the joint layers (4608). Each math-SDPA call holds float32 scores (4 B),
    float32 softmax (4 B) and a bool mask (1 B) per score. The joint layers' 4-byte blocks fit in no
    cached block, so new segments are made; their 1-byte mask and 2-byte probability copy are carved
    from the image refiner's 4-byte segments. Cached beyond the allocated peak: the refiners' segments
    (9 bytes per score each) minus the joint call's 1-byte block that fits into them."""
    e = entry("newbie-image-exp0.1")
    den = phases(e, attn="eager")["denoise"]
    cap, img, joint = (2 * 24 * n * n for n in (512, 4096, 4608))
    assert den.cached_bytes == 9 * cap + 9 * img - joint
    sdpa = phases(e)["denoise"]
    assert den.transient_bytes - sdpa.transient_bytes == 9 * joint


def test_host_process_peak_is_the_larger_of_loading_and_generating():
    from gpu_preflight.estimators.engines.diffusers import HOST_PROCESS_BYTES

    e = entry("flux.1-dev")
    resident = estimate_pipeline(e, ImageWorkload())
    weights = sum(resident.weights.values())
    # all on the GPU: the peak is loading every weight through host RAM
    assert resident.host_process_peak_bytes == HOST_PROCESS_BYTES["load"][0] + weights
    # model offload: every weight stays in host RAM while generating, and the process has run kernels
    model = estimate_pipeline(e, ImageWorkload(offload="model"))
    assert model.host_process_peak_bytes == HOST_PROCESS_BYTES["generate"][0] + weights
