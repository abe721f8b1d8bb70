#!/usr/bin/env python3
"""Measure llama.cpp's memory on this machine: build it, make GGUF files, run a matrix, log each case.

Runs with no network. Steps, all inside one wall-clock budget (--budget-s, build included):
1. build libllama from the carried source tree (.carry/llama.cpp: llama.cpp 0c1e57098 from the
   llama-cpp-python 0.3.36 sdist, trimmed to what libllama needs) with CUDA for sm_90 (or for the
   CPU with --cpu), then bench/llamacpp_probe.cpp against it;
2. write GGUF files with gguf-py (the carried wheel in .whl/): real model shapes, the tensor types
   llama-quantize gives (gpu_preflight.models.gguf_quant, checked against llama_model_quantize on
   the smallest model), all-zero weights as sparse files (memory does not depend on the values);
3. run each case in a fresh process (the probe loads the model, creates the context, decodes a
   prompt) while sampling NVML's per-process GPU memory every 10 ms; write one JSON line per case
   with llama.cpp's own buffer lines ("model buffer size", "KV buffer size", "compute buffer size")
   and the NVML peak.

Output in --out (default $OUT): llamacpp_cases.jsonl, llamacpp_env.json, llamacpp_build.log.
A crash keeps the finished cases; a rerun with the same --out skips them (resumable).

  python bench/llamacpp_device.py --budget-s 540              # the GPU run
  python bench/llamacpp_device.py --cpu --budget-s 1800       # rehearsal on a CPU-only machine
  python bench/llamacpp_device.py --dry-run                   # print the plan, touch nothing
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

GIB = 1 << 30
MIB = 1 << 20
# ggml type ids (ggml.h enum ggml_type) for the KV cache flags
GGML_TYPE_ID = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8, "BF16": 30}

# Real model shapes (config.json values; sources in calibration/llamacpp/README.md).
SHAPES: dict[str, dict] = {
    "llama-3.2-1b": {"model_type": "llama", "hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32,
                     "num_key_value_heads": 8, "head_dim": 64, "intermediate_size": 8192, "vocab_size": 128256,
                     "tie_word_embeddings": True, "max_position_embeddings": 131072, "rope_theta": 500000.0,
                     "rope_scaling": {"rope_type": "llama3", "factor": 32.0}},
    "qwen2.5-3b": {"model_type": "qwen2", "hidden_size": 2048, "num_hidden_layers": 36, "num_attention_heads": 16,
                   "num_key_value_heads": 2, "intermediate_size": 11008, "vocab_size": 151936,
                   "tie_word_embeddings": True, "max_position_embeddings": 32768, "rope_theta": 1000000.0},
    "qwen2.5-7b": {"model_type": "qwen2", "hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
                   "num_key_value_heads": 4, "intermediate_size": 18944, "vocab_size": 152064,
                   "tie_word_embeddings": False, "max_position_embeddings": 32768, "rope_theta": 1000000.0},
    "mistral-7b": {"model_type": "mistral", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                   "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 32768,
                   "tie_word_embeddings": False, "max_position_embeddings": 32768, "rope_theta": 1000000.0},
    "gemma-2-2b": {"model_type": "gemma2", "hidden_size": 2304, "num_hidden_layers": 26, "num_attention_heads": 8,
                   "num_key_value_heads": 4, "head_dim": 256, "intermediate_size": 9216, "vocab_size": 256000,
                   "tie_word_embeddings": True, "max_position_embeddings": 8192, "sliding_window": 4096,
                   "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "rope_theta": 10000.0},
    "qwen3-4b": {"model_type": "qwen3", "hidden_size": 2560, "num_hidden_layers": 36, "num_attention_heads": 32,
                 "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 9728, "vocab_size": 151936,
                 "tie_word_embeddings": True, "max_position_embeddings": 40960, "rope_theta": 1000000.0},
    "gemma-3-4b": {"model_type": "gemma3_text", "hidden_size": 2560, "num_hidden_layers": 34, "num_attention_heads": 8,
                   "num_key_value_heads": 4, "head_dim": 256, "intermediate_size": 10240, "vocab_size": 262208,
                   "tie_word_embeddings": True, "max_position_embeddings": 131072, "sliding_window": 1024,
                   "sliding_window_pattern": 6, "rope_theta": 1000000.0},
    # CPU rehearsal: tiny shapes that load and run in seconds on two cores
    "tiny-llama": {"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 768, "vocab_size": 4096,
                   "tie_word_embeddings": False, "max_position_embeddings": 8192},
    "tiny-gemma2": {"model_type": "gemma2", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
                    "num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 768, "vocab_size": 4096,
                    "tie_word_embeddings": True, "max_position_embeddings": 8192, "sliding_window": 256,
                    "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0},
    "tiny-qwen3": {"model_type": "qwen3", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 768, "vocab_size": 4096,
                   "tie_word_embeddings": True, "max_position_embeddings": 8192},
}


HELD_OUT = {"mistral-7b", "gemma-3-4b", "qwen2.5-3b"}


def case(model: str, quant: str, ctx: int, *, ub: int = 512, b: int = 2048, fa: int = 1, ctk: str = "F16",
         ctv: str = "F16", ngl: int = -1, seqs: int = 1, unified: int = 0, decode: int | None = None,
         tag: str = "") -> dict:
    c = {"model": model, "quant": quant, "ctx": ctx, "ubatch": ub, "batch": b, "fa": fa, "ctk": ctk, "ctv": ctv,
         "ngl": ngl, "seqs": seqs, "unified": unified, "decode": min(ctx, b) if decode is None else decode}
    c["id"] = tag or "-".join(str(c[k]) for k in ("model", "quant", "ctx", "ubatch", "batch", "fa", "ctk", "ctv",
                                                   "ngl", "seqs", "unified"))
    return c


def gpu_matrix() -> list[dict]:
    """In priority order: the run stops when the budget is spent, so the most informative come first."""
    m = []
    # Llama-3.2-1B: contexts, FA on/off, ubatch, KV types, parallel, partial offload
    for ctx in (4096, 32768):
        for fa in (1, 0):
            m.append(case("llama-3.2-1b", "Q4_K_M", ctx, fa=fa))
    m.append(case("qwen2.5-7b", "Q4_K_M", 8192, fa=1))
    m.append(case("qwen2.5-7b", "Q4_K_M", 8192, fa=0))
    m.append(case("gemma-2-2b", "Q8_0", 8192, fa=1))
    m.append(case("gemma-2-2b", "Q8_0", 8192, fa=0))
    m.append(case("llama-3.2-1b", "Q4_K_M", 16384, ub=2048, fa=1))
    m.append(case("llama-3.2-1b", "Q4_K_M", 16384, ub=2048, fa=0))
    m.append(case("llama-3.2-1b", "Q4_K_M", 16384, ctk="Q8_0", ctv="Q8_0"))
    m.append(case("llama-3.2-1b", "Q4_K_M", 16384, ctk="Q4_0", ctv="Q4_0"))
    m.append(case("llama-3.2-1b", "Q4_K_M", 16384, seqs=4))
    m.append(case("llama-3.2-1b", "Q4_K_M", 16384, seqs=4, unified=1))
    m.append(case("llama-3.2-1b", "Q4_K_M", 8192, ngl=8))
    m.append(case("llama-3.2-1b", "Q4_K_M", 8192, ngl=16))
    m.append(case("llama-3.2-1b", "Q4_K_M", 8192, ngl=0))
    m.append(case("mistral-7b", "Q4_K_M", 16384, fa=1))
    m.append(case("mistral-7b", "Q4_K_M", 16384, fa=0))
    m.append(case("mistral-7b", "Q4_K_M", 16384, ngl=20))
    m.append(case("qwen3-4b", "Q4_K_M", 16384, fa=1))
    m.append(case("qwen3-4b", "Q4_K_M", 16384, fa=0, ub=1024, b=1024))
    m.append(case("gemma-3-4b", "Q4_K_M", 32768, fa=1))
    m.append(case("gemma-3-4b", "Q4_K_M", 32768, fa=0))
    m.append(case("qwen2.5-3b", "Q4_K_M", 32768, fa=1))
    m.append(case("qwen2.5-3b", "Q4_K_M", 32768, fa=0, ub=256, b=256))
    m.append(case("llama-3.2-1b", "F16", 8192, fa=1))
    m.append(case("llama-3.2-1b", "Q8_0", 65536, fa=1))
    m.append(case("qwen2.5-7b", "Q4_K_M", 32768, ctk="Q8_0", ctv="Q8_0", seqs=2))
    m.append(case("gemma-2-2b", "Q8_0", 8192, fa=1, seqs=4, unified=1))
    m.append(case("qwen2.5-7b", "Q4_K_M", 8192, ngl=14))
    m.append(case("llama-3.2-1b", "Q4_K_M", 4096, fa=1, decode=0, tag="llama-3.2-1b-nodecode"))
    return m


def cpu_real_matrix() -> list[dict]:
    """Real shapes on the CPU, context creation only (no decode): checks the compute-buffer replay."""
    m = []
    for model, quant in (("llama-3.2-1b", "Q4_K_M"), ("qwen2.5-7b", "Q4_K_M"), ("gemma-2-2b", "Q8_0"),
                         ("gemma-3-4b", "Q4_K_M"), ("qwen3-4b", "Q4_K_M"), ("mistral-7b", "Q4_K_M"),
                         ("qwen2.5-3b", "Q4_K_M")):
        for ctx, fa, ub, b in ((4096, 1, 512, 2048), (32768, 0, 512, 2048), (16384, 1, 2048, 2048),
                               (8192, 0, 1024, 1024)):
            m.append(case(model, quant, ctx, fa=fa, ub=ub, b=b, decode=0))
    m.append(case("llama-3.2-1b", "Q4_K_M", 16384, ctk="Q8_0", ctv="Q8_0", decode=0))
    m.append(case("llama-3.2-1b", "Q4_K_M", 16384, seqs=4, decode=0))
    m.append(case("llama-3.2-1b", "Q4_K_M", 16384, seqs=4, unified=1, decode=0))
    m.append(case("gemma-3-4b", "Q4_K_M", 16384, seqs=4, unified=1, decode=0))
    return m


def cpu_matrix() -> list[dict]:
    m = []
    for model in ("tiny-llama", "tiny-gemma2", "tiny-qwen3"):
        for ctx, fa, ub in ((1024, 0, 512), (1024, 1, 512), (4096, 0, 256), (2048, 1, 1024)):
            m.append(case(model, "Q4_K_M", ctx, fa=fa, ub=ub, b=max(ub, 1024), decode=64))
    m.append(case("tiny-llama", "Q4_K_M", 2048, ctk="Q8_0", ctv="Q8_0", decode=64))
    m.append(case("tiny-llama", "Q4_K_M", 2048, seqs=4, decode=64))
    m.append(case("tiny-llama", "Q4_K_M", 2048, seqs=4, unified=1, decode=64))
    m.append(case("tiny-llama", "F16", 2048, fa=0, decode=64))
    return m


# ---- environment ----

def run_cmd(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def environment(cpu: bool) -> dict:
    env = {"python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count(),
           "mode": "cpu" if cpu else "cuda", "llama_cpp_source": "llama-cpp-python 0.3.36 vendor/llama.cpp (0c1e57098)"}
    try:
        env["gguf_py"] = __import__("importlib.metadata").metadata.version("gguf")
    except Exception as exc:  # noqa: BLE001
        env["gguf_py"] = f"unavailable: {exc}"
    if not cpu:
        try:
            import pynvml

            pynvml.nvmlInit()
            h = pynvml.nvmlDeviceGetHandleByIndex(0)
            name = pynvml.nvmlDeviceGetName(h)
            env["gpu"] = name.decode() if isinstance(name, bytes) else name
            drv = pynvml.nvmlSystemGetDriverVersion()
            env["driver"] = drv.decode() if isinstance(drv, bytes) else drv
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            env["gpu_memory_total_bytes"], env["gpu_memory_used_bytes_at_start"] = mem.total, mem.used
            env["gpu_count"] = pynvml.nvmlDeviceGetCount()
        except Exception as exc:  # noqa: BLE001
            env["nvml"] = f"unavailable: {exc}"
        nvcc = find_nvcc()
        if nvcc:
            try:
                env["nvcc"] = run_cmd([nvcc, "--version"], 30).stdout.strip().splitlines()[-1]
            except Exception as exc:  # noqa: BLE001
                env["nvcc"] = f"error: {exc}"
    for tool in ("cmake", "gcc"):
        try:
            env[tool] = run_cmd([tool, "--version"], 30).stdout.splitlines()[0]
        except Exception as exc:  # noqa: BLE001
            env[tool] = f"unavailable: {exc}"
    return env


def find_nvcc() -> str | None:
    return shutil.which("nvcc") or next((p for p in ("/usr/local/cuda/bin/nvcc",) if os.path.exists(p)), None)


# ---- build ----

def build(src: Path, build_dir: Path, cpu: bool, jobs: int, log: Path, timeout_s: float) -> Path:
    """Configure and build libllama (+ ggml); returns the folder holding the shared libraries."""
    build_dir.mkdir(parents=True, exist_ok=True)
    lib_dir = build_dir / "bin"
    hints = [] if cpu else cuda_library_hints(find_nvcc(), build_dir)
    if (lib_dir / "libllama.so").exists():
        return lib_dir
    cfg = ["cmake", "-S", str(src), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=ON",
           "-DLLAMA_BUILD_COMMON=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_TOOLS=OFF",
           "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_OPENSSL=OFF",
           "-DGGML_NATIVE=ON", "-DGGML_CCACHE=OFF", "-DLLAMA_BUILD_NUMBER=0", "-DLLAMA_BUILD_COMMIT=0c1e57098"]
    if shutil.which("ninja"):
        cfg += ["-G", "Ninja"]
    if not cpu:
        cfg += ["-DGGML_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=90", "-DGGML_CUDA_FA_ALL_QUANTS=OFF"]
        nvcc = find_nvcc()
        if nvcc:
            cfg.append(f"-DCMAKE_CUDA_COMPILER={nvcc}")
        cfg += hints
    t0 = time.time()
    with open(log, "a") as f:
        f.write("$ " + " ".join(cfg) + "\n")
        f.flush()
        done = subprocess.run(cfg, stdout=f, stderr=subprocess.STDOUT, timeout=120)
        if done.returncode != 0 and not cpu:
            # no libcuda.so for CMake to link (VMM pool): the legacy pool still runs every case
            f.write("# configure failed; retrying with -DGGML_CUDA_NO_VMM=ON\n")
            f.flush()
            shutil.rmtree(build_dir / "CMakeFiles", ignore_errors=True)
            (build_dir / "CMakeCache.txt").unlink(missing_ok=True)
            subprocess.run(cfg + ["-DGGML_CUDA_NO_VMM=ON"], stdout=f, stderr=subprocess.STDOUT, check=True, timeout=120)
        elif done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, cfg)
        bld = ["cmake", "--build", str(build_dir), "--target", "llama", "-j", str(jobs)]
        f.write("$ " + " ".join(bld) + "\n")
        f.flush()
        subprocess.run(bld, stdout=f, stderr=subprocess.STDOUT, check=True, timeout=max(timeout_s, 60))
        f.write(f"# build took {time.time() - t0:.0f} s\n")
    return lib_dir


EXTRA_LIB_DIRS: list[str] = []  # cuBLAS found outside the toolkit: the probe needs it on LD_LIBRARY_PATH


def cuda_library_hints(nvcc: str | None, build_dir: Path) -> list[str]:
    """CMake cache entries for cuBLAS and libcuda when the toolkit lacks them: the machine's PyTorch
    ships cuBLAS as a wheel (site-packages/nvidia/.../libcublas.so.N, no unversioned name, headers
    beside it), and the driver's libcuda.so.1 may have no unversioned link either."""
    import glob

    root = Path(nvcc).resolve().parents[1] if nvcc else Path("/usr/local/cuda")
    hints: list[str] = []
    have_cublas = any(Path(root, d, "libcublas.so").exists() for d in ("lib64", "lib", "targets/x86_64-linux/lib"))
    if not have_cublas:
        import site

        roots = [p for p in site.getsitepackages() + [site.getusersitepackages()] if p]
        libs = sorted(glob.glob(f"{roots[0]}/nvidia/**/libcublas.so.*", recursive=True)) if roots else []
        for r in roots[1:]:
            libs = libs or sorted(glob.glob(f"{r}/nvidia/**/libcublas.so.*", recursive=True))
        if libs:
            lib = Path(libs[-1])
            shim = build_dir / "cublas-shim"
            shim.mkdir(parents=True, exist_ok=True)
            for name in ("libcublas", "libcublasLt"):
                target = next(iter(sorted(lib.parent.glob(f"{name}.so.*"))), None)
                link = shim / f"{name}.so"
                if target and not link.exists():
                    link.symlink_to(target)
            inc = next((p for p in (lib.parent.parent / "include",) if (p / "cublas_v2.h").exists()), None)
            hints += [f"-DCUDA_cublas_LIBRARY={shim / 'libcublas.so'}",
                      f"-DCUDA_cublasLt_LIBRARY={shim / 'libcublasLt.so'}"]
            if inc:
                hints += [f"-DCMAKE_CUDA_FLAGS=-I{inc}", f"-DCMAKE_CXX_FLAGS=-I{inc}"]
            EXTRA_LIB_DIRS.append(str(lib.parent))
    libcuda = [p for p in ("/usr/lib/x86_64-linux-gnu/libcuda.so", "/usr/lib64/libcuda.so",
                           "/usr/local/nvidia/lib64/libcuda.so", "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
                           "/usr/local/nvidia/lib64/libcuda.so.1", "/usr/lib64/libcuda.so.1") if os.path.exists(p)]
    if libcuda:
        hints.append(f"-DCUDA_cuda_driver_LIBRARY={libcuda[0]}")
    return hints


def build_probe(src: Path, lib_dir: Path, out: Path, log: Path) -> Path:
    exe = out / "llamacpp_probe"
    cmd = ["g++", "-O2", "-std=c++17", str(ROOT / "bench" / "llamacpp_probe.cpp"), "-o", str(exe),
           f"-I{src / 'include'}", f"-I{src / 'ggml' / 'include'}", f"-L{lib_dir}", "-lllama", "-lggml",
           "-lggml-base", f"-Wl,-rpath,{lib_dir}"]
    for d in EXTRA_LIB_DIRS:
        cmd += [f"-Wl,-rpath-link,{d}", f"-Wl,-rpath,{d}"]
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=True, timeout=300)
    return exe


# ---- GGUF files ----

def import_gguf():
    try:
        import gguf  # noqa: F401
    except ModuleNotFoundError as exc:
        wheels = sorted((ROOT / ".whl").glob("gguf-*.whl"))
        if exc.name == "gguf" and wheels:
            sys.path.insert(0, str(wheels[-1]))  # a pure-Python wheel imports straight from the zip
            return import_gguf()
        if exc.name != "yaml":
            raise
        import types

        sys.modules["yaml"] = types.ModuleType("yaml")  # gguf-py imports yaml only for model cards
    import gguf

    return gguf


def write_gguf(path: Path, shape_name: str, quant: str) -> dict:
    """A GGUF with the model's real tensor shapes and llama-quantize's types; the data is all zeros
    (a sparse file), which changes nothing about memory."""
    from gpu_preflight.estimators.engines.llama_cpp import shape_from_config
    from gpu_preflight.models.gguf_quant import FTYPES, gguf_tensors, quantize

    gguf = import_gguf()
    cfg = SHAPES[shape_name]
    s = shape_from_config(cfg)
    tensors = quantize(gguf_tensors(s), quant, s) if quant not in ("F16", "BF16", "F32") else \
        gguf_tensors(s, float_type=quant)
    w = gguf.GGUFWriter(str(path), s.arch)
    w.add_name(f"{shape_name} (zero weights, gpu-preflight)")
    w.add_context_length(int(cfg.get("max_position_embeddings", 8192)))
    w.add_embedding_length(s.n_embd)
    w.add_block_count(s.n_layer)
    w.add_feed_forward_length(s.n_ff)
    w.add_head_count(s.n_head)
    w.add_head_count_kv(s.n_head_kv)
    w.add_key_length(s.head_dim)
    w.add_value_length(s.head_dim)
    w.add_rope_dimension_count(s.head_dim)
    w.add_rope_freq_base(float(cfg.get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(FTYPES[quant][0])
    w.add_vocab_size(s.n_vocab)
    if s.arch in ("gemma2", "gemma3") and cfg.get("sliding_window"):
        w.add_sliding_window(int(cfg["sliding_window"]))
    if s.arch == "gemma2":
        w.add_attn_logit_softcapping(float(cfg.get("attn_logit_softcapping", 50.0)))
        w.add_final_logit_softcapping(float(cfg.get("final_logit_softcapping", 30.0)))
    if s.n_expert:
        w.add_expert_count(s.n_expert)
        w.add_expert_used_count(s.n_expert_used)
        w.add_expert_feed_forward_length(s.n_ff_exp)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"<t{i}>" for i in range(s.n_vocab)])
    w.add_token_scores([0.0] * s.n_vocab)
    w.add_token_types([1] * s.n_vocab)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    qt = gguf.GGMLQuantizationType
    import numpy as np

    for t in tensors:
        w.add_tensor_info(t.name, tuple(reversed(t.ne)), np.dtype(np.float32), t.nbytes, raw_dtype=qt[t.type])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    align = 32
    size = path.stat().st_size
    data_start = -(-size // align) * align
    total = sum(-(-t.nbytes // align) * align for t in tensors)
    os.truncate(path, data_start + total)
    return {"tensor_bytes": sum(t.nbytes for t in tensors), "file_bytes": data_start + total,
            "types": _type_counts(tensors)}


def _type_counts(tensors) -> dict:
    out: dict[str, int] = {}
    for t in tensors:
        out[t.type] = out.get(t.type, 0) + 1
    return out


# ---- one case ----

BUFFER_LINE = re.compile(r"(\S+)\s+(model|KV|compute|output|RS) buffer size\s*=\s*([\d.]+) MiB")


def parse_log(text: str) -> dict:
    out: dict = {"buffers": {}}
    for m in BUFFER_LINE.finditer(text):
        key = f"{m.group(2)}:{m.group(1)}"
        out["buffers"][key] = out["buffers"].get(key, 0.0) + float(m.group(3))
    for pat, key in ((r"n_ctx\s+=\s*(\d+)", "n_ctx"), (r"n_ctx_seq\s+=\s*(\d+)", "n_ctx_seq"),
                     (r"n_ubatch\s+=\s*(\d+)", "n_ubatch"), (r"flash_attn\s+=\s*(\S+)", "flash_attn"),
                     (r"offloaded (\d+)/(\d+) layers", "offloaded"), (r"graph splits = (\d+)", "splits")):
        m = re.search(pat, text)
        if m:
            out[key] = m.group(0)
    out["kv_lines"] = [ln.strip() for ln in text.splitlines() if "llama_kv_cache" in ln and "size" in ln][:6]
    out["errors"] = [ln.strip() for ln in text.splitlines() if "error" in ln.lower() or "failed" in ln.lower()][:5]
    return out


class NvmlSampler:
    """Peak GPU memory of one process (NVML's per-process usage) and of the device, sampled."""

    def __init__(self, interval_s: float = 0.01):
        import pynvml

        self.nv = pynvml
        pynvml.nvmlInit()
        self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        self.interval_s = interval_s
        self.pid = None
        self.peak_process = [0] * len(self.handles)
        self.peak_device = [0] * len(self.handles)
        self.base_device = [self.nv.nvmlDeviceGetMemoryInfo(h).used for h in self.handles]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self, pid: int) -> None:
        self.pid = pid
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.interval_s)

    def sample(self) -> None:
        for i, h in enumerate(self.handles):
            try:
                used = self.nv.nvmlDeviceGetMemoryInfo(h).used
                self.peak_device[i] = max(self.peak_device[i], used - self.base_device[i])
                for p in self.nv.nvmlDeviceGetComputeRunningProcesses(h):
                    if p.pid == self.pid and p.usedGpuMemory:
                        self.peak_process[i] = max(self.peak_process[i], p.usedGpuMemory)
            except self.nv.NVMLError:
                pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1)
        self.sample()


def run_case(exe: Path, model_path: Path, c: dict, cpu: bool, timeout_s: float) -> dict:
    args = [str(exe), "run", str(model_path), f"ctx={c['ctx']}", f"batch={c['batch']}", f"ubatch={c['ubatch']}",
            f"seqs={c['seqs']}", f"fa={c['fa']}", f"ctk={GGML_TYPE_ID[c['ctk']]}", f"ctv={GGML_TYPE_ID[c['ctv']]}",
            f"ngl={c['ngl']}", f"unified={c['unified']}", f"decode={c['decode']}",
            f"threads={min(os.cpu_count() or 4, 16)}"]
    t0 = time.time()
    env = dict(os.environ)
    if EXTRA_LIB_DIRS:
        env["LD_LIBRARY_PATH"] = ":".join(EXTRA_LIB_DIRS + [env.get("LD_LIBRARY_PATH", "")]).rstrip(":")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    sampler = None
    if not cpu:
        try:
            sampler = NvmlSampler()
            sampler.start(proc.pid)
        except Exception as exc:  # noqa: BLE001
            sampler = None
            print(f"  NVML sampling unavailable: {exc}", file=sys.stderr)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        rc = "timeout"
    if sampler:
        sampler.stop()
    rec = dict(c)
    rec["config"] = SHAPES[c["model"]]
    # chosen before any GPU result was seen: these models never set the process-overhead constant
    rec["held_out"] = c["model"] in HELD_OUT
    rec.update(parse_log(stderr))
    rec["rc"] = rc
    rec["wall_s"] = round(time.time() - t0, 2)
    rec["probe"] = [ln for ln in stdout.splitlines() if ln.startswith("PROBE")]
    if sampler:
        rec["nvml_peak_process_bytes"] = sampler.peak_process
        rec["nvml_peak_device_delta_bytes"] = sampler.peak_device
    if rc != 0:
        rec["stderr_tail"] = stderr[-2000:]
    return rec


# ---- main ----

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-s", type=float, default=540, help="wall-clock budget, build included (default 540)")
    ap.add_argument("--cpu", action="store_true", help="CPU build and tiny models (rehearsal without a GPU)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    ap.add_argument("--src", default=str(ROOT / ".carry" / "llama.cpp"), help="llama.cpp source tree")
    ap.add_argument("--build-dir", default=None, help="build folder (default /tmp/gpf-llamacpp-build[-cpu])")
    ap.add_argument("--models-dir", default=None, help="where the GGUF files go (default /tmp/gpf-llamacpp-models)")
    ap.add_argument("--out", default=os.environ.get("OUT") or "llamacpp-out", help="results folder (default $OUT)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 4)
    ap.add_argument("--only", default=None, help="run only cases whose id contains this text")
    ap.add_argument("--skip", type=int, default=0,
                    help="skip the first N cases (a second call on a warm machine reuses the build)")
    ap.add_argument("--matrix", choices=("gpu", "cpu", "cpu-real"), default=None,
                    help="which case list (default: gpu, or cpu with --cpu)")
    a = ap.parse_args(argv)

    t_start = time.time()
    deadline = t_start + a.budget_s
    out = Path(a.out)
    matrices = {"gpu": gpu_matrix, "cpu": cpu_matrix, "cpu-real": cpu_real_matrix}
    cases = matrices[a.matrix or ("cpu" if a.cpu else "gpu")]()
    if a.only:
        cases = [c for c in cases if a.only in c["id"]]
    cases = cases[a.skip:]
    if a.dry_run:
        print(f"{len(cases)} cases, budget {a.budget_s:.0f} s, source {a.src}")
        for c in cases:
            print("  " + c["id"])
        return 0
    out.mkdir(parents=True, exist_ok=True)
    src = Path(a.src)
    if not (src / "CMakeLists.txt").exists():
        print(f"error: no llama.cpp source at {src} (carry .carry/llama.cpp)", file=sys.stderr)
        return 3
    build_dir = Path(a.build_dir or ("/tmp/gpf-llamacpp-build" + ("-cpu" if a.cpu else "")))
    models_dir = Path(a.models_dir or "/tmp/gpf-llamacpp-models")
    models_dir.mkdir(parents=True, exist_ok=True)
    results = out / "llamacpp_cases.jsonl"
    done = set()
    if results.exists():
        for line in results.read_text().splitlines():
            try:
                done.add(json.loads(line)["id"])
            except (ValueError, KeyError):
                pass
    env = environment(a.cpu)
    (out / "llamacpp_env.json").write_text(json.dumps(env, indent=2))
    print(f"environment: {json.dumps(env)}")

    log = out / "llamacpp_build.log"
    t0 = time.time()
    try:
        lib_dir = build(src, build_dir, a.cpu, a.jobs, log, timeout_s=deadline - time.time() - 30)
        exe = build_probe(src, lib_dir, build_dir, log)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        print(f"error: build failed ({exc}); see {log}", file=sys.stderr)
        print(log.read_text()[-3000:], file=sys.stderr)
        return 3
    build_s = time.time() - t0
    print(f"build: {build_s:.0f} s")
    env["build_s"] = round(build_s, 1)
    (out / "llamacpp_env.json").write_text(json.dumps(env, indent=2))

    written: dict[str, dict] = {}
    n_ok = n_fail = 0
    with open(results, "a") as f:
        for c in cases:
            if c["id"] in done:
                continue
            left = deadline - time.time()
            if left < 25:
                print(f"budget spent: {len(cases) - n_ok - n_fail - len(done)} cases left", file=sys.stderr)
                break
            key = f"{c['model']}-{c['quant']}"
            path = models_dir / f"{key}.gguf"
            if key not in written:
                tw = time.time()
                written[key] = write_gguf(path, c["model"], c["quant"])
                written[key]["write_s"] = round(time.time() - tw, 2)
            rec = run_case(exe, path, c, a.cpu, timeout_s=min(120, left - 5))
            rec["gguf"] = written[key]
            f.write(json.dumps(rec) + "\n")
            f.flush()
            ok = rec["rc"] == 0
            n_ok += ok
            n_fail += not ok
            b = rec.get("buffers", {})
            peak = rec.get("nvml_peak_process_bytes", [0])
            print(f"{'ok ' if ok else 'ERR'} {c['id']:<58} {rec['wall_s']:5.1f}s "
                  f"model {sum(v for k, v in b.items() if k.startswith('model:')):8.1f} "
                  f"KV {sum(v for k, v in b.items() if k.startswith('KV:')):7.1f} "
                  f"compute {sum(v for k, v in b.items() if k.startswith('compute:')):7.1f} MiB "
                  f"peak {max(peak or [0]) / MIB:8.1f} MiB", flush=True)
    print(f"done: {n_ok} ok, {n_fail} failed, {len(done)} from before, {time.time() - t_start:.0f} s in all; "
          f"results in {results}")
    return 0 if n_fail == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
