"""Encoder-decoder models (T5 / Flan-T5 / mT5, BART / mBART, Whisper): weights from config.json and the
memory of transformers' generate().

generate() of an encoder-decoder (transformers 5.17, generation/utils.py
`_prepare_encoder_decoder_kwargs_for_generation`) runs the encoder once over the whole input and keeps
its output for the whole generation; the decoder then starts from its start token, one token per step.
At the first decoder step every decoder layer projects the encoder output to cross-attention keys and
values and stores them in the EncoderDecoderCache (batch x heads x encoder_len x head_dim, K and V,
per decoder layer), next to the self-attention cache that grows by one token per step. So the peak is
the larger of the encoder pass (its layer activations; T5's relative-position buckets, S x S int64
temporaries built once per stack; Whisper's two convolutions over the log-mel frames) and the last
decoder step (encoder output + cross KV + self KV + the step's logits).

Tensor names below follow modeling_t5.py, modeling_bart.py, modeling_mbart.py and modeling_whisper.py
of transformers 5.17; tests/test_encdec.py checks the weights against the models transformers builds
on the meta device and the activation peaks against bench/trace_allocations.py traces.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from gpu_preflight.errors import ModelSourceError, UsageError
from gpu_preflight.estimators.arch import DTYPE_BYTES
from gpu_preflight.estimators.weights import Tensor

FP32 = 4
WHISPER_WINDOW_S = 30  # WhisperFeatureExtractor: chunk_length 30 s, 100 frames per second (hop 160 at 16 kHz)


@dataclass
class EncDecArch:
    family: str                 # t5 | bart | mbart | whisper
    model_type: str
    d_model: int
    enc_layers: int
    dec_layers: int
    enc_heads: int
    dec_heads: int
    head_dim: int
    enc_ffn: int
    dec_ffn: int
    vocab: int
    tied: bool
    gated: bool = False         # T5 gated-gelu / gated-silu (wi_0, wi_1)
    act: str = "relu"           # relu | gelu | gelu_new | silu
    buckets: int = 32           # T5 relative_attention_num_buckets
    max_positions: int | None = None   # BART / mBART learned positions (offset 2)
    mel_bins: int = 80
    source_positions: int = 1500       # Whisper encoder frames after the stride-2 convolution
    target_positions: int = 448
    scale_embedding: bool = False
    warnings: list[str] = field(default_factory=list)
    # T5 self-attention under SDPA on CUDA takes the math backend (_t5_sdpa_math); False replays the CPU,
    # whose SDPA kernel accepts the strided position bias (what bench/trace_allocations.py records)
    t5_sdpa_math: bool = True

    @property
    def inner(self) -> int:
        return self.enc_heads * self.head_dim

    @property
    def dec_inner(self) -> int:
        return self.dec_heads * self.head_dim


def _i(cfg: dict, *names: str, default: int | None = None) -> int:
    for n in names:
        v = cfg.get(n)
        if v is not None:
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ModelSourceError(f"config.json field {n!r} must be a non-negative integer, got {v!r}")
            return v
    if default is None:
        raise ModelSourceError(f"config.json has no {names[0]!r}", hint="is this an encoder-decoder config?")
    return default


def parse_encdec(config: dict) -> EncDecArch:
    """The layout of a T5 / BART / mBART / Whisper config (defaults: the transformers config classes)."""
    mt = str(config.get("model_type") or "")
    if mt in ("t5", "mt5", "umt5"):
        d, heads = _i(config, "d_model", default=512), _i(config, "num_heads", default=8)
        layers = _i(config, "num_layers", default=6)
        proj = str(config.get("feed_forward_proj") or "relu")
        gated = proj.startswith("gated-")
        act = proj.split("-")[-1]
        act = {"gelu": "gelu_new", "relu": "relu", "silu": "silu"}.get(act, act) if gated else act
        return EncDecArch("t5", mt, d, layers, _i(config, "num_decoder_layers", default=layers), heads, heads,
                          _i(config, "d_kv", default=64), _i(config, "d_ff", default=2048),
                          _i(config, "d_ff", default=2048), _i(config, "vocab_size", default=32128),
                          # T5Config (transformers 5.x) pops tie_word_embeddings and always ties lm_head to
                          # shared ("we tie weights always", configuration_t5.py); it only decides the scaling
                          True, gated=gated, act=act,
                          buckets=_i(config, "relative_attention_num_buckets", default=32))
    if mt in ("bart", "mbart", "whisper"):
        d = _i(config, "d_model", default=1024 if mt != "whisper" else 384)
        eh = _i(config, "encoder_attention_heads", default=16 if mt != "whisper" else 6)
        a = EncDecArch("whisper" if mt == "whisper" else mt, mt, d,
                       _i(config, "encoder_layers", default=12 if mt != "whisper" else 4),
                       _i(config, "decoder_layers", default=12 if mt != "whisper" else 4), eh,
                       _i(config, "decoder_attention_heads", default=eh), d // eh,
                       _i(config, "encoder_ffn_dim", default=4096 if mt != "whisper" else 1536),
                       _i(config, "decoder_ffn_dim", default=4096 if mt != "whisper" else 1536),
                       _i(config, "vocab_size", default=50265 if mt != "whisper" else 51865),
                       bool(config.get("tie_word_embeddings", True)),
                       act="gelu" if str(config.get("activation_function", "gelu")) == "gelu" else "other",
                       scale_embedding=bool(config.get("scale_embedding", False)))
        if mt == "whisper":
            a.mel_bins = _i(config, "num_mel_bins", default=80)
            a.source_positions = _i(config, "max_source_positions", default=1500)
            a.target_positions = _i(config, "max_target_positions", default=448)
        else:
            a.max_positions = _i(config, "max_position_embeddings", default=1024)
        return a
    raise ModelSourceError(f"model_type {mt!r} is not an encoder-decoder this estimator models",
                           hint="T5 / mT5 / UMT5, BART / mBART and Whisper are")


# ---- weights (parameters as transformers builds them, tied tensors once) ----

def weight_tensors(a: EncDecArch, dt: int) -> list[Tensor]:
    ts: list[Tensor] = []

    def t(name: str, n: int) -> None:
        ts.append(Tensor(name, n, n * dt))

    d = a.d_model
    if a.family == "t5":
        t("shared", a.vocab * d)
        for stack, layers, cross in (("encoder", a.enc_layers, False), ("decoder", a.dec_layers, True)):
            for i in range(layers):
                p = f"{stack}.block.{i}."
                for blk in (["SelfAttention"] + (["EncDecAttention"] if cross else [])):
                    t(p + blk + ".qkvo", 4 * d * a.inner)
                    t(p + blk + ".layer_norm", d)
                if i == 0:
                    t(p + "relative_attention_bias", a.buckets * a.enc_heads)
                t(p + "DenseReluDense", (3 if a.gated else 2) * d * a.enc_ffn)
                t(p + "ff.layer_norm", d)
            t(stack + ".final_layer_norm", d)
        if not a.tied:
            t("lm_head", a.vocab * d)
        return ts
    whisper = a.family == "whisper"
    t("embed_tokens", a.vocab * d)
    if whisper:
        t("encoder.conv1", a.mel_bins * d * 3 + d)
        t("encoder.conv2", d * d * 3 + d)
        t("encoder.embed_positions", a.source_positions * d)
        t("decoder.embed_positions", a.target_positions * d)
    else:
        for stack in ("encoder", "decoder"):
            t(stack + ".embed_positions", (int(a.max_positions or 1024) + 2) * d)
            t(stack + ".layernorm_embedding", 2 * d)
    attn = 4 * d * d + (3 if whisper else 4) * d  # Whisper: k_proj has no bias
    for stack, layers, ffn, cross in (("encoder", a.enc_layers, a.enc_ffn, False),
                                      ("decoder", a.dec_layers, a.dec_ffn, True)):
        for i in range(layers):
            p = f"{stack}.layers.{i}."
            t(p + "self_attn", attn)
            t(p + "self_attn_layer_norm", 2 * d)
            if cross:
                t(p + "encoder_attn", attn)
                t(p + "encoder_attn_layer_norm", 2 * d)
            t(p + "fc1_fc2", 2 * d * ffn + ffn + d)
            t(p + "final_layer_norm", 2 * d)
        if whisper or a.family == "mbart":
            t(stack + ".layer_norm", 2 * d)
    if not a.tied:
        t("lm_head", a.vocab * d)
    if not whisper:
        ts.append(Tensor("buffer:final_logits_bias", a.vocab, a.vocab * dt))
    return ts


# ---- the generate() replay ----

def encoder_len(a: EncDecArch, input_len: int) -> int:
    """Positions the encoder sees: the prompt tokens, or Whisper's 1500 frames for any audio length."""
    return a.source_positions if a.family == "whisper" else input_len


def _gelu_new(r, name: str, size: int) -> None:
    """NewGELUActivation written out in Python: 0.5 * x * (1 + tanh(c * (x + 0.044715 * x^3)))."""
    r.a(name + ".half", size)
    r.a(name + ".pow", size)
    for nm, prev in ((".c", ".pow"), (".sum", ".c"), (".s", ".sum"), (".tanh", ".s"), (".one", ".tanh")):
        r.a(name + nm, size)
        r.f(name + prev)
    r.a(name, size)
    r.f(name + ".half", name + ".one")


def _t5_norm(r, name: str, rows: int, d: int, dt: int) -> None:
    """T5LayerNorm: float32 variance, hidden * rsqrt (float32), cast to bf16, * weight."""
    if rows * d * FP32 <= (1 << 20):
        r.a(name, rows * d * dt)
        return
    r.a(name + ".x32", rows * d * FP32)
    r.a(name + ".pow", rows * d * FP32)
    r.a(name + ".var", rows * FP32)
    r.f(name + ".pow", name + ".x32")
    r.a(name + ".rs", rows * FP32)
    r.a(name + ".n32", rows * d * FP32)
    r.f(name + ".rs", name + ".var")
    r.a(name + ".cast", rows * d * dt)
    r.f(name + ".n32")
    r.a(name, rows * d * dt)
    r.f(name + ".cast")


def _t5_bias(r, q_len: int, k_len: int, heads: int, dt: int) -> None:
    """T5Attention.compute_bias: relative_position (q x k int64), _relative_position_bucket's int64 and bool
    temporaries (six q x k int64 tensors live at its peak), then the bucket embedding (q x k x heads),
    permuted to the position bias (1 x heads x q x k) that every layer of the stack reuses."""
    n = q_len * k_len
    r.a("rb.pos", n * 8)
    r.a("rb.gt", n)
    r.a("rb.long", n * 8)
    r.f("rb.gt")
    r.a("rb.buckets", n * 8)
    r.f("rb.long")
    r.a("rb.abs", n * 8)
    r.a("rb.small", n)
    r.a("rb.f", n * FP32)
    r.a("rb.log", n * FP32)
    r.f("rb.f")
    r.a("rb.large", n * 8)
    r.f("rb.log")
    r.a("rb.full", n * 8)
    r.a("rb.min", n * 8)
    r.f("rb.full", "rb.large")
    r.a("rb.where", n * 8)
    r.f("rb.min", "rb.small", "rb.abs")
    r.a("rb.sum", n * 8)
    r.f("rb.where", "rb.buckets", "rb.pos")
    r.a("pos_bias", n * heads * dt)
    r.f("rb.sum")


def _attn_block(r, a: EncDecArch, b: int, q_len: int, kv_len: int, heads: int, dt: int, eager: bool,
                self_kv: str | None, t5_bias: bool = False) -> None:
    """q / k / v projections, attention, the transpose copy and the output projection: leaves "o".
    `self_kv`: the decoder's self-attention cache of this layer (grows by q_len; torch.cat copies)."""
    rows, inner, d = b * q_len, heads * a.head_dim, a.d_model
    r.a("q", rows * inner * dt)
    r.a("k", rows * inner * dt)
    r.a("v", rows * inner * dt)
    if t5_bias:  # the first layer of a T5 stack computes the position bias after its projections
        _t5_bias(r, q_len, kv_len, heads, dt)
    if self_kv:
        for kv in ("K", "V"):
            r.a(f"{self_kv}{kv}.new", b * kv_len * inner * dt)
            r.f(f"{self_kv}{kv}")
            r.rename(f"{self_kv}{kv}.new", f"{self_kv}{kv}")
        r.f("k", "v")
    scores = b * heads * q_len * kv_len
    if eager:
        r.a("scores", scores * dt)
        r.a("sm32", scores * FP32)
        r.a("probs", scores * dt)
        r.f("sm32", "scores")
    if a.family == "t5" and a.t5_sdpa_math and not eager:
        _t5_sdpa_math(r, b, q_len, kv_len, heads, a.head_dim, dt)  # leaves "attn"
    else:
        r.a("attn", rows * inner * dt)
        r.a("lse", b * heads * q_len * FP32) if not eager else None
    r.f("lse", "probs", "q", "k", "v")
    r.a("attn.t", rows * inner * dt)  # transpose(1, 2).contiguous()
    r.f("attn")
    r.a("o", rows * d * dt)
    r.f("attn.t")


def _t5_sdpa_math(r, b: int, q_len: int, kv_len: int, heads: int, hd: int, dt: int) -> None:
    """T5 self-attention under attn_implementation="sdpa" runs torch's math backend. T5Attention.compute_bias
    returns `values.permute([2, 0, 1]).unsqueeze(0)` (modeling_t5.py, transformers 5.17): a view whose last
    dimension has stride n_heads. sdpa_attention_forward passes it as the float attn_mask
    (integrations/sdpa_attention.py create_position_bias_mask: the bias itself when there is no padding
    mask), and every fused CUDA kernel requires an attn_mask with stride 1 in its last dimension
    (aten/src/ATen/native/transformers/sdp_utils_cpp.h check_last_dim_stride_equals_1_dense, torch 2.11).
    The math path (attention.cpp _scaled_dot_product_attention_math): q, k, v to float32, q and k scaled,
    reshaped to (b * heads) batches for matmul (copies when b > 1: the heads are a transposed view),
    float32 scores, the bias added in place, _safe_softmax's float32 output and boolean isneginf mask
    beside the scores (9 bytes per score), attn.to(bf16) returned and discarded, matmul with v, cast back.
    Cross-attention's bias is torch.zeros (contiguous): fused. Leaves "attn" (b x heads x q x head_dim)."""
    rows, scores = b * q_len, b * heads * q_len * kv_len
    r.a("q32", rows * heads * hd * FP32)
    r.a("k32", b * kv_len * heads * hd * FP32)
    r.a("v32", b * kv_len * heads * hd * FP32)
    r.a("q.s", rows * heads * hd * FP32)
    r.a("k.s", b * kv_len * heads * hd * FP32)
    if b > 1 and q_len > 1:
        r.a("q.c", rows * heads * hd * FP32)
        r.a("k.c", b * kv_len * heads * hd * FP32)
    r.a("s32", scores * FP32)
    r.f("q.c", "k.c", "k.s")
    r.a("sm", scores * FP32)
    r.a("sm.inf", scores)
    r.a("sm.rows", b * heads * q_len)
    r.f("sm.inf", "sm.rows", "s32")
    r.a("probs", scores * dt)
    if b > 1 and q_len > 1:
        r.a("v.c", b * kv_len * heads * hd * FP32)
    r.a("attn32", rows * heads * hd * FP32)
    r.f("v.c")
    r.a("attn", rows * heads * hd * dt)
    r.f("attn32", "sm", "q.s", "q32", "k32", "v32")


def _ffn(r, a: EncDecArch, rows: int, ffn: int, dt: int) -> None:
    """T5 DenseReluDense / DenseGatedActDense, BART / Whisper fc1 -> activation -> fc2: leaves "mlp"."""
    size = rows * ffn * dt
    if a.gated:
        r.a("wi0", size)
        if a.act == "gelu_new":
            _gelu_new(r, "act", size)
        else:
            r.a("act", size)
        r.f("wi0")
        r.a("wi1", size)
        r.a("prod", size)
        r.f("act", "wi1")
    else:
        r.a("wi", size)
        r.a("prod", size)
        r.f("wi")
    r.a("mlp", rows * a.d_model * dt)
    r.f("prod")


def _encoder(r, a: EncDecArch, b: int, s: int, dt: int, eager: bool) -> None:
    """The encoder pass; leaves "enc_out" (b x s x d_model), which generate() keeps to the end."""
    d, rows = a.d_model, b * s
    if a.family == "whisper":
        frames = 2 * s
        r.a("conv1", b * d * frames * dt)
        r.a("gelu1", b * d * frames * dt)
        r.f("conv1")
        r.a("conv2", rows * d * dt)
        r.a("gelu2", rows * d * dt)
        r.f("conv2", "gelu1")
        r.a("h", rows * d * dt)  # inputs_embeds (permuted view, kept referenced) + embed_positions
        r.rename("gelu2", "embeds")
    else:
        r.a("embeds", rows * d * dt)
        if a.family != "t5":
            r.a("pos", rows * d * dt)
            r.a("embeds.sum", rows * d * dt)
            r.a("h", rows * d * dt)  # layernorm_embedding; inputs_embeds and embed_pos stay referenced
            r.f("embeds.sum")
        else:
            r.a("h", 0)  # T5Stack: hidden_states = dropout(inputs_embeds), the same tensor (kept referenced)
    pre_norm = a.family != "bart"
    for li in range(a.enc_layers):
        if a.family == "t5":
            _t5_norm(r, "x", rows, d, dt)
        elif pre_norm:
            r.a("x", rows * d * dt)
        _attn_block(r, a, b, s, s, a.enc_heads, dt, eager, None, t5_bias=a.family == "t5" and li == 0)
        r.f("x")
        r.a("h1", rows * d * dt)
        r.f("o")
        if not pre_norm:
            r.a("h1n", rows * d * dt)
            r.f("h1")
            r.rename("h1n", "h1")
        if a.family == "t5":
            _t5_norm(r, "x", rows, d, dt)
        elif pre_norm:
            r.a("x", rows * d * dt)
        _ffn(r, a, rows, a.enc_ffn, dt)
        r.f("x")
        r.a("h2", rows * d * dt)
        r.f("mlp", "h1")
        if not pre_norm:
            r.a("h2n", rows * d * dt)
            r.f("h2")
            r.rename("h2n", "h2")
        r.f("h")
        r.rename("h2", "h")
    if a.family == "t5":
        _t5_norm(r, "enc_out", rows, d, dt)
    else:
        r.a("enc_out", rows * d * dt) if a.family != "bart" else r.rename("h", "enc_out")
    r.f("h", "embeds", "pos", "pos_bias")


def _decoder_step(r, a: EncDecArch, b: int, past: int, s_enc: int, dt: int, eager: bool, first: bool) -> None:
    """One decoder step (one new token per sequence): self-attention (cache grows), cross-attention (its
    K / V projected from the encoder output at the first step and cached), FFN, logits of the last
    position, generate()'s float32 copy."""
    d, rows = a.d_model, b
    r.a("dh", rows * d * dt)
    if a.family == "t5" and first:
        pass  # the decoder's position bias is 1 x heads x 1 x (past + 1): small
    for i in range(a.dec_layers):
        r.a("x", rows * d * dt)
        _attn_block(r, a, b, 1, past + 1, a.dec_heads, dt, eager, f"self{i}")
        r.f("x")
        r.a("h1", rows * d * dt)
        r.f("o")
        r.a("x", rows * d * dt)
        if first:  # EncDecAttention / encoder_attn: k, v of the encoder output, cached (torch.cat: a copy)
            r.a("ck", b * s_enc * a.dec_inner * dt)
            r.a(f"cross{i}K", b * s_enc * a.dec_inner * dt)
            r.a("cv", b * s_enc * a.dec_inner * dt)
            r.a(f"cross{i}V", b * s_enc * a.dec_inner * dt)
            r.f("ck", "cv")
        r.a("q", rows * a.dec_inner * dt)
        if eager:
            r.a("scores", b * a.dec_heads * s_enc * dt)
            r.a("sm32", b * a.dec_heads * s_enc * FP32)
        r.a("attn", rows * a.dec_inner * dt)
        r.f("scores", "sm32", "q", "x")
        r.a("o", rows * d * dt)
        r.f("attn")
        r.a("h2", rows * d * dt)
        r.f("o", "h1")
        r.a("x", rows * d * dt)
        _ffn(r, a, rows, a.dec_ffn, dt)
        r.f("x")
        r.a("h3", rows * d * dt)
        r.f("mlp", "h2", "dh")
        r.rename("h3", "dh")
    r.a("logits", b * a.vocab * dt)
    r.f("dh")
    if a.family != "t5":
        r.a("logits.bias", b * a.vocab * dt)  # BART: lm_logits + final_logits_bias; Whisper: proj_out (same size)
        r.f("logits")
        r.rename("logits.bias", "logits")
    r.a("next_logits", b * a.vocab * FP32)  # outputs.logits[:, -1].to(copy=True, dtype=float32)
    # MinLengthLogitsProcessor and MinNewTokensLengthLogitsProcessor (generation/logits_process.py, what
    # `preflight measure` runs with min_new_tokens): each builds arange(vocab), scores.clone() and torch.where
    r.a("lp1.arange", a.vocab * 8)
    r.a("lp1.clone", b * a.vocab * FP32)
    r.a("lp1.where", b * a.vocab * FP32)
    r.f("lp1.clone", "lp1.arange")
    r.a("lp2.clone", b * a.vocab * FP32)
    r.a("lp2.arange", a.vocab * 8)
    r.a("lp2.where", b * a.vocab * FP32)
    r.f("lp2.clone", "lp2.arange", "lp1.where", "prev_scores")
    r.a("next_tokens", b * 8)
    # the step's outputs (logits) go at the end of the step; its processed scores stay referenced by the
    # loop until the next step's replace them
    r.f("next_logits", "logits")
    r.rename("lp2.where", "prev_scores")


def estimate_encdec(a: EncDecArch, w, cc: tuple[int, int] | None = None, tensors: list[Tensor] | None = None):
    """LlmEstimate of generate(): the encoder pass, then the decoder steps (first, middle, last)."""
    from gpu_preflight.estimators.engines.transformers import LlmEstimate, _Replay, cublas_workspace_bytes

    dt = DTYPE_BYTES.get(w.dtype, 2)
    eager = w.attn == "eager"
    tensors = tensors or weight_tensors(a, dt)
    r = _Replay()
    for t in tensors:
        r.a("w:" + t.name, t.bytes)
    weights_allocated = r.al.allocated
    r.a("cublas.workspace", cublas_workspace_bytes(cc))
    r.reset_peaks()
    base = r.al.allocated
    s = encoder_len(a, w.input_len)
    _encoder(r, a, w.batch, s, dt, eager)
    phases = {"encode": {"peak_allocated_bytes": r.al.peak_allocated, "peak_reserved_bytes": r.al.peak_reserved}}
    steps = max(w.output_len, 1)
    picks = sorted({0, steps // 2, steps - 1})
    done = 0
    for p in picks:
        for _ in range(done, p):  # the self cache grows one token per step; replay only the sampled steps
            pass
        _decoder_step(r, a, w.batch, p, s, dt, eager, first=p == 0)
        done = p + 1
    phases["decode"] = {"peak_allocated_bytes": r.al.peak_allocated, "peak_reserved_bytes": r.al.peak_reserved}
    peak = r.al.peak_allocated
    exact = sum(t.bytes for t in tensors if not t.name.startswith("buffer:"))
    buffers = sum(t.bytes for t in tensors if t.name.startswith("buffer:"))
    cross = w.batch * s * a.dec_inner * dt * 2 * a.dec_layers
    self_kv = w.batch * (steps) * a.dec_inner * dt * 2 * a.dec_layers
    breakdown = {"weights": exact, "allocator_rounding": weights_allocated - exact - buffers,
                 "kv_cache": self_kv, "cross_attention_kv": cross,
                 "activations": max(peak - base - cross - self_kv, 0),
                 "cublas_workspace": cublas_workspace_bytes(cc), "allocator_slack": r.al.peak_reserved - peak}
    if buffers:
        breakdown["buffers"] = buffers
    assumptions = [f"encoder-decoder ({a.family}): the encoder runs once over {s} positions"
                   + (" (Whisper pads or cuts audio to 30 s windows: 1500 encoder frames each)"
                      if a.family == "whisper" else "")
                   + f"; each of the {a.dec_layers} decoder layers caches cross-attention K and V of the "
                     f"encoder output for the whole generation"]
    return LlmEstimate(weights_allocated, cross + self_kv, peak, r.al.peak_reserved, phases, breakdown,
                       assumptions, r.peak_requested)


def check_workload(a: EncDecArch, w) -> list[str]:
    notes: list[str] = []
    if a.max_positions and w.input_len > a.max_positions:
        raise UsageError(f"--input-len {w.input_len} exceeds this model's max_position_embeddings "
                         f"{a.max_positions} (learned positions: longer inputs fail)",
                         hint=f"use --input-len {a.max_positions} or less")
    if a.family == "whisper" and w.output_len > a.target_positions:
        raise UsageError(f"--output-len {w.output_len} exceeds Whisper's max_target_positions {a.target_positions}",
                         hint=f"use --output-len {a.target_positions} or less")
    return notes


def summary(a: EncDecArch) -> dict[str, Any]:
    return {"model_type": a.model_type, "family": a.family, "encoder_layers": a.enc_layers,
            "decoder_layers": a.dec_layers, "d_model": a.d_model, "heads": a.enc_heads, "head_dim": a.head_dim,
            "vocab_size": a.vocab, "tied_embeddings": a.tied, **({"gated_ffn": True} if a.gated else {})}


def shortened(a: EncDecArch) -> EncDecArch:
    return dataclasses.replace(a)


# ---- the report (`preflight estimate` on an encoder-decoder, transformers engine) ----

def encdec_report(config: dict, w, targets: list, torch_version: str | None, model_name: str,
                  tensors=None, weights_source: str | None = None) -> dict[str, Any]:
    """The estimate report of an encoder-decoder: same keys as the decoder report (docs/json-schema.md),
    kind "seq2seq" or "speech_seq2seq", breakdown with cross_attention_kv."""
    from gpu_preflight import __version__
    from gpu_preflight.estimators.arch import model_kind
    from gpu_preflight.estimators.overheads import process_overhead
    from gpu_preflight.estimators.plan import REPORT_SCHEMA, REPORT_SCHEMA_VERSION, _fit_row, _search_max

    a = parse_encdec(config)
    check_workload(a, w)
    first = targets[0] if targets else None

    def peak(w2, t) -> tuple[Any, int, str]:
        est = estimate_encdec(a, w2, t.cc if t else None, tensors)
        overhead, src = process_overhead(t.cc if t else None, torch_version)
        return est, est.peak_reserved_bytes + overhead, src

    est, proc, src = peak(w, first)
    fits = [_fit_row(t, proc if t is first else peak(w, t)[1]) for t in targets]
    breakdown = dict(est.breakdown)
    breakdown["cuda_context_and_libraries"] = proc - est.peak_reserved_bytes
    assumptions = list(est.assumptions) + [f"process overhead: {src}",
                                           "weights " + (weights_source or f"from the {a.family} layout table")]
    report = {"schema": REPORT_SCHEMA, "schema_version": REPORT_SCHEMA_VERSION, "tool_version": __version__,
              "model": model_name, "kind": model_kind(config), "engine": "transformers",
              "workload": dataclasses.asdict(w), "architecture": {**summary(a), "weights_source":
                                                                   weights_source or f"family table ({a.family})"},
              "peak_allocated_bytes": est.peak_allocated_bytes, "peak_reserved_bytes": est.peak_reserved_bytes,
              "peak_process_bytes": proc, "breakdown": breakdown, "phases": est.phase_peaks, "fits": fits,
              "max_context_tokens": None, "max_batch": None, "suggestions": [], "assumptions": assumptions}
    if first is not None:
        def fits_with(w2) -> bool:
            return peak(w2, first)[1] <= first.memory_bytes

        report["max_batch"] = _search_max(1, 1024, lambda n: fits_with(dataclasses.replace(w, batch=n)))
        if a.family != "whisper":
            cap = a.max_positions or 16384
            report["max_context_tokens"] = _search_max(
                16, cap, lambda n: fits_with(dataclasses.replace(w, input_len=n)))
    return report
