"""Image pipelines: the estimator against H100 measurements (calibration/raw/diffusion-h100.jsonl:
torch 2.11.0+cu130, transformers 5.17.0, diffusers 0.42.1), and its own rules."""

import json
import os
import statistics
import pytest

from gpu_preflight.measurement.calibration_diffusion import compare, default_paths, run_peaks
from gpu_preflight.cli import main
from gpu_preflight.errors import UsageError
from gpu_preflight.estimators.engines.diffusers import ImageWorkload, estimate_pipeline
from gpu_preflight.models.catalog import load_catalog

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository: calibration/, bench/

MB50 = 50 * 1024 * 1024


@pytest.fixture(scope="module")
def rows():
    return compare(default_paths(ROOT))


def test_matrix_covers_issue_4_and_5(rows):
    pipelines = {r["pipeline"] for r in rows}
    sizes = {r["height"] for r in rows}
    assert len(pipelines) >= 4 and {512, 1024, 2048} <= sizes and {1, 4} <= {r["batch"] for r in rows}


def test_pipeline_peak_process_within_5_percent(rows):
    """Issue 5: <= 5 % on peak process memory with all components resident (per pipeline and size)."""
    errors = [abs(e - m) / m for m, e in run_peaks(rows).values()]
    assert len(errors) >= 12 and max(errors) <= 0.05


def test_phase_transients(rows):
    """Issue 5: median <= 10 %, worst <= 25 % on each phase's transient (phases above 50 MB; the
    CLIP encoders' 2-9 MB transients are reported with their absolute error in docs/accuracy.md)."""
    held = [abs(r["transient_error"]) for r in rows if r["held_out"] and r["measured_transient_bytes"] > MB50]
    assert len(held) >= 40
    assert statistics.median(held) <= 0.10 and max(held) <= 0.25
    tiny = [abs(r["estimated_transient_bytes"] - r["measured_transient_bytes"]) for r in rows
            if r["measured_transient_bytes"] <= MB50]
    assert max(tiny) <= 10 * 1024 * 1024


def entry(name):
    return load_catalog().find(name).raw


def test_vae_decode_is_the_peak_and_grows_with_pixels():
    e = entry("flux.1-dev")
    small = estimate_pipeline(e, ImageWorkload(height=1024, width=1024))
    big = estimate_pipeline(e, ImageWorkload(height=2048, width=2048))
    vae = {p.name: p for p in big.phases}["vae_decode"]
    assert max(big.phases, key=lambda p: p.peak_allocated_bytes).name == "vae_decode"
    assert vae.transient_bytes == 4 * {p.name: p for p in small.phases}["vae_decode"].transient_bytes


def test_cfg_doubles_the_denoiser_batch_unless_distilled():
    sd3 = {p.name: p for p in estimate_pipeline(entry("sd3.5-medium"), ImageWorkload()).phases}["denoise"]
    flux = estimate_pipeline(entry("flux.1-dev"), ImageWorkload())
    assert sd3.detail.startswith("2 x")
    assert {p.name: p for p in flux.phases}["denoise"].detail.startswith("1 x")
    assert any("guidance-distilled" in a for a in flux.assumptions)


def test_sizes_round_to_what_diffusers_uses():
    est = estimate_pipeline(entry("flux.1-dev"), ImageWorkload(height=1000, width=1000))
    assert est.rounded == (992, 992)  # FLUX: multiples of vae_scale_factor (8) x 2 (packing)


def test_absurd_size_is_refused():
    with pytest.raises(UsageError) as exc:
        estimate_pipeline(entry("sdxl-base-1.0"), ImageWorkload(height=100000, width=100000))
    assert "100000x100000" in exc.value.message


def test_offload_and_dropping_encoders_lower_the_peak():
    e = entry("newbie-image-exp0.1")
    base = estimate_pipeline(e, ImageWorkload()).peak_reserved_bytes
    drop = estimate_pipeline(e, ImageWorkload(drop_text_encoders=True)).peak_reserved_bytes
    model = estimate_pipeline(e, ImageWorkload(offload="model")).peak_reserved_bytes
    tiled = estimate_pipeline(e, ImageWorkload(offload="model", vae_tiling=True)).peak_reserved_bytes
    assert base > drop > model >= tiled  # with model offload the 8 GB Gemma encoder alone is the peak


def test_cli_cheapest_change_for_a_16gb_card(capsys):
    code = main(["estimate", "newbie-image-exp0.1", "--gpu", "rtx-4060-ti-16gb", "--json"])
    r = json.loads(capsys.readouterr().out)
    assert code == 2 and r["fits"][0]["fits"] is False
    assert r["suggestions"] and r["suggestions"][0]["fits"]
    assert set(r["phases"]["vae_decode"]) >= {"peak_allocated_bytes", "transient_bytes", "resident_bytes"}
    assert "peak_process_bytes" in r


def test_missing_component_sizes_are_named():
    e = json.loads(json.dumps(entry("flux.1-dev")))
    e["components"]["text_encoder_2"]["weights"] = None
    e["components"]["text_encoder_2"].pop("structure", None)
    est = estimate_pipeline(e, ImageWorkload())
    assert any("text_encoder_2" in a and "not counted" in a for a in est.assumptions)


def test_diffusers_folder_uses_header_sizes(tmp_path, capsys):
    from models_helpers import write_safetensors

    root = tmp_path / "pipe"
    (root / "vae").mkdir(parents=True)
    (root / "transformer").mkdir()
    (root / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline",
                                                       "vae": ["diffusers", "AutoencoderKL"],
                                                       "transformer": ["diffusers", "FluxTransformer2DModel"]}))
    (root / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL",
                                                          "block_out_channels": [128, 256, 512, 512]}))
    (root / "transformer" / "config.json").write_text(json.dumps({"_class_name": "FluxTransformer2DModel",
                                                                  "num_attention_heads": 24, "attention_head_dim": 128}))
    write_safetensors(root / "vae" / "diffusion_pytorch_model.safetensors", {"w": ("BF16", (1000, 100))})
    write_safetensors(root / "transformer" / "diffusion_pytorch_model.safetensors", {"w": ("BF16", (3000, 1000))})
    code = main(["estimate", str(root), "--gpu", "h100", "--height", "1024", "--width", "1024", "--json"])
    r = json.loads(capsys.readouterr().out)
    assert code == 0
    assert r["breakdown"]["weights:vae"] == 100000 * 2 and r["breakdown"]["weights:transformer"] == 3000000 * 2


def test_video_memory_scales_with_frames_and_decode_chunk(capsys):
    main(["estimate", "sonic", "--gpu", "h100", "--json"])
    r = json.loads(capsys.readouterr().out)
    assert any("25 frames per denoiser call" in a and "chunks of 8" in a for a in r["assumptions"])
    main(["estimate", "sonic", "--gpu", "h100", "--frames", "50", "--decode-chunk", "4", "--json"])
    r2 = json.loads(capsys.readouterr().out)
    assert abs(r2["phases"]["denoise"]["transient_bytes"] - 2 * r["phases"]["denoise"]["transient_bytes"]) <= 2
    assert abs(r2["phases"]["vae_decode"]["transient_bytes"] * 2 - r["phases"]["vae_decode"]["transient_bytes"]) <= 2


def test_video_cases_are_in_the_calibration(rows):
    sonic = [r for r in rows if r["pipeline"] == "sonic" and r["phase"] in ("denoise", "vae_decode")]
    assert len(sonic) >= 8 and max(abs(r["process_error"]) for r in sonic) <= 0.05


def test_eager_attention_adds_the_score_matrix():
    e = entry("flux.1-dev")
    sdpa = {p.name: p for p in estimate_pipeline(e, ImageWorkload()).phases}["denoise"]
    eager = {p.name: p for p in estimate_pipeline(e, ImageWorkload(attn="eager")).phases}["denoise"]
    # FLUX 1024x1024: 4096 image + 512 text tokens, 24 heads; torch's math SDPA keeps float32 scores,
    # float32 softmax and a bool mask alive at once: 9 bytes per score
    assert eager.transient_bytes - sdpa.transient_bytes == 24 * 4608 * 4608 * 9
    # every joint layer has the same score size: nothing left cached beyond the allocated peak
    assert eager.cached_bytes == 0


def test_fp8_quantizes_linear_weights_only():
    """torchao float8 weight-only: each nn.Linear weight 1 byte + one fp32 scale per output row; the
    SD3.5 transformer's other tensors (norms, pos_embed, biases...) stay bfloat16."""
    e = entry("sd3.5-medium")
    s = e["components"]["transformer"]["structure"]
    fp8 = estimate_pipeline(e, ImageWorkload(quantize="fp8"))
    lin, rows, total = s["linear_weight_parameters"], s["linear_rows"], s["parameters"]
    pos_embed = 384 * 384 * 1536 * 2  # PatchEmbed's persistent sin-cos buffer (pos_embed_max_size 384), bf16
    assert fp8.weights["transformer"] == lin + 4 * rows + 2 * (total - lin) + pos_embed
    assert 0.5 < (fp8.weights["transformer"] - pos_embed) / (2 * total) < 0.51
