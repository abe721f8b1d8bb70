"""Peak GPU memory of fine-tuning a decoder LLM (full, LoRA, QLoRA; ZeRO / FSDP), per phase.

One training step (forward, backward, optimizer step) is replayed as the allocations and frees
that PyTorch's autograd makes, through the caching-allocator model (allocator.py). The replay is
a small autograd engine: every op of the transformers decoder creates its output, keeps the
tensors autograd saves for backward (which depend on which inputs require grad), and in backward
allocates the gradients its derivative formula produces, in reverse creation order, releasing
saved tensors as each node runs. Two steps are replayed, so the optimizer states created by the
first step are resident in the second (the steady state a run lives in).

What the code allocates, with the files it comes from (docs/training.md has the full list):
- transformers 5.17 models/llama/modeling_llama.py (LlamaRMSNorm, LlamaAttention, LlamaMLP,
  LlamaDecoderLayer), qwen2/qwen3 (q/k norm), gemma2/gemma3 (Gemma RMSNorm in float32 with
  (1 + w), four norms per layer, scaled embeddings, final logit softcapping), phi3 (fused
  qkv_proj / gate_up_proj sliced into views), mistral; integrations/sdpa_attention.py
  (enable_gqa without a mask, repeat_kv with one); masking_utils.py (a mask only where a sliding
  window is shorter than the sequence); loss/loss_utils.py ForCausalLMLoss (logits.float(),
  cross_entropy = log_softmax + nll_loss); cache_utils.py DynamicLayer.update (torch.cat);
  modeling_utils.py gradient_checkpointing_enable (use_reentrant=False by default,
  enable_input_require_grads).
- torch autograd's saved tensors (tools/autograd/derivatives.yaml: mm saves self only when mat2
  requires grad and mat2 only when self does; pow saves self; rsqrt and tanh their result; silu
  and gelu their input; log_softmax its result; SDPA flash / cuDNN save q, k, v, output and
  logsumexp; input_buffer.cpp adds a tied weight's two gradients out of place);
  torch/utils/checkpoint.py (non-reentrant: the layer input is kept, the layer is recomputed
  when backward first needs it); torch/optim/adam.py (_multi_tensor_adam: one temporary
  torch._foreach_sqrt(exp_avg_sqs) per step; the fused kernel none), torch/optim/_adafactor.py.
- peft 0.18-0.21 tuners/lora/layer.py Linear.forward (x.to(lora_A.weight.dtype), adapters in
  float32 by default: autocast_adapter_dtype=True).

The search for the largest micro-batch / sequence length replays a model with at most six
explicit layers and the rest as one block (its saved activations and gradients scale exactly
with the layer count), so its cost does not grow with the number of layers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gpu_preflight.estimators.allocator import Allocator

GIB = 1 << 30
FP32, BF16, I64 = 4, 2, 8
CATS = ("weights", "grads", "optimizer_states", "activations", "logits_and_loss", "temporaries")
OPTIMIZERS = ("adamw", "adamw_foreach", "adamw_8bit", "paged_adamw_8bit", "adafactor", "sgd")
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PHI3_NAMES = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
BNB_BLOCK_8BIT = 256   # bitsandbytes optim/optimizer.py Optimizer8bit: blockwise absmax per 256 values
BNB_MIN_8BIT = 4096    # bitsandbytes: min_8bit_size, smaller tensors keep 32-bit states
NF4_BLOCK = 64         # bitsandbytes Linear4bit: one absmax per 64 weights
DQ_BLOCK = 256         # double quantization: absmax quantized to 8 bit in blocks of 256


# ---------------------------------------------------------------------------------------------
# The setup being estimated
# ---------------------------------------------------------------------------------------------

@dataclass
class TrainSetup:
    mode: str = "full"                 # full | lora | qlora
    micro_batch: int = 1
    seq_len: int = 2048
    grad_ckpt: bool = False
    optimizer: str = "adamw"           # see OPTIMIZERS
    mixed_precision: str = "bf16"      # bf16 | fp16 | no (torch.autocast around the forward, as Trainer does)
    param_dtype: str = "bfloat16"      # the weights as loaded: bfloat16 | float16 | float32 (fp32 master weights)
    lora_rank: int = 16
    lora_targets: tuple[str, ...] = ("all-linear",)
    gpus: int = 1
    zero: int = 0
    fsdp: str | None = None            # full_shard | shard_grad_op
    offload_optimizer: str | None = None  # cpu
    device: str = "cuda"               # "cpu": replay without the caching allocator (tests on CPU)
    double_quant: bool = True          # QLoRA: bnb_4bit_use_double_quant (the QLoRA recipe)
    master_scale: float = 1.0          # FSDP fp32 shards under bf16 compute: shard bytes / bf16 bytes


def dtype_bytes(name: str) -> int:
    return {"float32": 4, "bfloat16": 2, "float16": 2}[name]


# ---------------------------------------------------------------------------------------------
# Allocation bookkeeping: buffers with reference counts and a category
# ---------------------------------------------------------------------------------------------

class _Exact:
    """Exact byte counter with the Allocator's interface (CPU replays: no caching allocator)."""

    def __init__(self) -> None:
        self.sizes: dict[int, int] = {}
        self.next = 1
        self.allocated = self.reserved = self.peak_allocated = self.peak_reserved = 0

    def malloc(self, n: int) -> int:
        h = self.next
        self.next += 1
        self.sizes[h] = n
        self.allocated += n
        self.reserved = self.allocated
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        self.peak_reserved = self.peak_allocated
        return h

    def free(self, h: int) -> None:
        self.allocated -= self.sizes.pop(h)
        self.reserved = self.allocated


class Buf:
    __slots__ = ("cat", "h", "n", "refs", "saved", "view")

    def __init__(self, h: int, n: int, cat: str):
        self.h, self.n, self.refs, self.cat, self.saved = h, n, 1, cat, 0
        self.view = False   # a gradient that is a view of another tensor (its base shares the storage)


class Ten:
    """A simulated tensor: its storage, its bytes, element size, whether it requires grad, and
    where its gradient goes (the node that produced it, a parameter, or nowhere)."""
    __slots__ = ("buf", "dest", "dt", "n", "rg")

    def __init__(self, buf: Buf | None, n: int, dt: int, rg: bool, dest: Any = None):
        self.buf, self.n, self.dt, self.rg, self.dest = buf, n, dt, rg, dest


class Param:
    __slots__ = ("buf", "dt", "grad", "grad_keep", "layer", "name", "numel", "rg", "ten")

    def __init__(self, name: str, numel: int, dt: int, rg: bool, layer: int | None = None):
        self.name, self.numel, self.dt, self.rg, self.layer = name, numel, dt, rg, layer
        self.buf: Buf | None = None
        self.grad: Buf | None = None
        self.ten: Ten | None = None
        self.grad_keep = numel * dt   # bytes of .grad kept per GPU (sharded by ZeRO-2/3 and FSDP)


class Node:
    __slots__ = ("gbytes", "gin", "head", "ins", "nsaved", "passthru", "region", "saved", "seq", "split", "views", "ws")

    def __init__(self, seq: int, ins: list, gbytes: list, passthru: list, ws: list, region: int | None):
        self.seq, self.ins, self.gbytes, self.passthru, self.ws, self.region = seq, ins, gbytes, passthru, ws, region
        self.saved: list[Buf] = []
        self.nsaved = 0
        self.head = False
        self.gin: Buf | None = None
        self.split: list[Buf] | None = None
        self.views: list[bool] | None = None   # which input gradients come out as views


class Sim:
    """The replay: allocator, live bytes per category, phase peaks, the autograd tape."""

    def __init__(self, cuda: bool = True, cc: tuple[int, int] | None = None):
        self.al = Allocator() if cuda else _Exact()
        self.cuda = cuda
        self.cc = cc
        self.live = dict.fromkeys(CATS, 0)
        self.tape: list[Node] = []
        self.seq = 0
        self.region: int | None = None      # checkpointed layer being run
        self.no_save = False                # forward of a checkpointed layer: saved tensors are dropped
        self.recompute: list | None = None  # collects saved buffers while recomputing a layer
        self.phase = ""
        self.phases: dict[str, dict[str, Any]] = {}
        self.head = False                   # allocations belong to logits / loss
        self.cast_cache: dict[int, Ten] = {}

    # --- buffers ---
    def alloc(self, n: int, cat: str = "temporaries") -> Buf:
        n = int(n)
        if self.head and cat == "temporaries":
            cat = "logits_and_loss"
        b = Buf(self.al.malloc(max(n, 1)), n, cat)
        self.live[cat] += n
        self._after_alloc()
        return b

    def _after_alloc(self) -> None:
        p = self.phases.get(self.phase)
        if p is None:
            return
        if self.al.allocated > p["alloc"]:
            p["alloc"] = self.al.allocated
            p["at_peak"] = dict(self.live)
        p["reserved"] = max(p["reserved"], self.al.reserved)

    def inc(self, b: Buf | None) -> None:
        if b is not None:
            b.refs += 1

    def dec(self, b: Buf | None) -> None:
        if b is None:
            return
        b.refs -= 1
        if b.refs == 0:
            self.live[self._cat(b)] -= b.n
            self.al.free(b.h)

    def _cat(self, b: Buf) -> str:
        return "activations" if b.saved and b.cat == "temporaries" else b.cat

    def recat(self, b: Buf, cat: str) -> None:
        self.live[self._cat(b)] -= b.n
        b.cat = cat
        self.live[self._cat(b)] += b.n

    def save(self, node: Node | None, b: Buf | None) -> None:
        """Autograd keeps `b` for the backward of `node` (a checkpointed layer only counts it; a
        recompute collects it for the original node)."""
        if b is None or node is None:
            return
        if self.recompute is not None:
            self.recompute.append(b)
        elif self.no_save:
            node.nsaved += 1
            return
        else:
            node.saved.append(b)
        self._mark_saved(b)

    def keep(self, node: Node, b: Buf) -> None:
        """Keep `b` alive with `node`, outside the saved-tensor hooks (checkpoint inputs)."""
        node.saved.append(b)
        self._mark_saved(b)

    def _mark_saved(self, b: Buf) -> None:
        self.inc(b)
        if b.saved == 0:
            self.live[b.cat] -= b.n
            b.saved = 1
            self.live[self._cat(b)] += b.n
        else:
            b.saved += 1

    def unsave(self, b: Buf) -> None:
        b.saved -= 1
        if b.saved == 0:
            self.live["activations" if b.cat == "temporaries" else b.cat] -= b.n
            self.live[b.cat] += b.n
        self.dec(b)

    def start_phase(self, name: str) -> None:
        self.phase = name
        p = self.phases.get(name)
        if p is None:
            self.phases[name] = {"alloc": self.al.allocated, "reserved": self.al.reserved, "at_peak": dict(self.live)}
        else:
            # a later step's phase: what is resident when it starts counts toward its peak (torch's
            # max_memory_reserved after reset_peak_memory_stats starts at the current reserved bytes)
            if self.al.allocated > p["alloc"]:
                p["alloc"], p["at_peak"] = self.al.allocated, dict(self.live)
            p["reserved"] = max(p["reserved"], self.al.reserved)
        self.al.peak_allocated = self.al.allocated

    # --- tensors and nodes ---
    def new(self, n: int, dt: int, rg: bool, cat: str = "temporaries") -> Ten:
        return Ten(self.alloc(n, cat), n, dt, rg)

    def drop(self, *ts: Ten | None) -> None:
        for t in ts:
            if t is not None:
                self.dec(t.buf)

    def view(self, t: Ten) -> Ten:
        """A view: same storage, gradient flows to the same place."""
        self.inc(t.buf)
        return Ten(t.buf, t.n, t.dt, t.rg, t.dest)

    def node(self, ins: list[Ten], gbytes: list[int] | None = None, passthru: list[bool] | None = None,
             ws: list[int] | None = None) -> Node | None:
        """A backward node for an op whose output requires grad, routing to the inputs that do."""
        if not any(t.rg for t in ins):
            return None
        self.seq += 1
        nd = Node(self.seq, ins, gbytes or [t.n for t in ins], passthru or [False] * len(ins), ws or [], self.region)
        nd.head = self.head
        if self.recompute is None:
            self.tape.append(nd)
        return nd

    def out(self, n: int, dt: int, nd: Node | None, cat: str = "temporaries") -> Ten:
        t = self.new(n, dt, nd is not None, cat)
        t.dest = nd
        return t


# ---------------------------------------------------------------------------------------------
# Ops (what each allocates and saves; backward sizes)
# ---------------------------------------------------------------------------------------------

def op_linear(s: Sim, x: Ten, w: Ten, out_numel: int, bias: Ten | None = None, cdt: int | None = None) -> Ten:
    """F.linear: saves x when the weight requires grad, the weight when x does."""
    dt = cdt or x.dt
    ins = [x, w] + ([bias] if bias is not None else [])
    nd = s.node(ins)
    y = s.out(out_numel * dt, dt, nd)
    if nd is not None:
        # the weight's gradient is mm_mat2_backward's `grad.t().mm(mat1).t()` through TBackward0: a view
        nd.views = [False, True] + ([False] if bias is not None else [])
        if w.rg:
            s.save(nd, x.buf)
        if x.rg:
            s.save(nd, w.buf)
    return y


def op_elementwise(s: Sim, a: Ten, b: Ten | None, out_n: int, out_dt: int, kind: str = "add") -> Ten:
    """A pointwise op that saves nothing: `add` (its gradient passes through to same-size, same-dtype
    inputs without a copy; also models torch.cat's copy of one tensor), `scale` (times a Python scalar:
    backward allocates the input's gradient)."""
    ins = [a] + ([b] if b is not None else [])
    passthru = [kind == "add" and t.n == out_n and t.dt == out_dt for t in ins]
    nd = s.node(ins, [t.n for t in ins], passthru)
    return s.out(out_n, out_dt, nd)


def op_mul(s: Sim, a: Ten, b: Ten, out_n: int, out_dt: int) -> Ten:
    """a * b: saves b if a requires grad and a if b does."""
    nd = s.node([a, b], [a.n, b.n], [False, False], [out_n for t in (a, b) if t.rg and t.n < out_n])
    y = s.out(out_n, out_dt, nd)
    if nd is not None:
        if a.rg:
            s.save(nd, b.buf)
        if b.rg:
            s.save(nd, a.buf)
    return y


def op_add(s: Sim, a: Ten, b: Ten, out_n: int, out_dt: int) -> Ten:
    return op_elementwise(s, a, b, out_n, out_dt, kind="add")


def op_scale(s: Sim, a: Ten) -> Ten:
    """Multiply / divide by a Python scalar: saves nothing."""
    return op_elementwise(s, a, None, a.n, a.dt, kind="scale")


def op_cast(s: Sim, a: Ten, dt: int) -> Ten:
    """x.to(dtype): a copy when the dtype changes (else the same tensor); saves nothing."""
    if dt == a.dt:
        return s.view(a)
    nd = s.node([a])
    return s.out(a.n // a.dt * dt, dt, nd)


def op_unary(s: Sim, a: Ten, save: str | None, out_dt: int | None = None, ws: tuple = ()) -> Ten:
    dt = out_dt or a.dt
    nd = s.node([a], ws=list(ws))
    y = s.out(a.n // a.dt * dt, dt, nd)
    if nd is not None and save:
        s.save(nd, a.buf if save == "in" else y.buf)
    return y


def op_slice(s: Sim, base: Ten, n: int) -> Ten:
    """x[..., a:b]: a view; its backward allocates zeros of the base's size (slice_backward)."""
    nd = s.node([base], [base.n])
    s.inc(base.buf)
    return Ten(base.buf, n, base.dt, nd is not None, nd)


def op_split(s: Sim, base: Ten, parts: int) -> list[Ten]:
    """x.chunk(k): views; one backward node that concatenates the parts' grads (one full-size buffer)."""
    nd = s.node([base], [base.n])
    if nd is not None:
        nd.split = []
    outs = []
    for _ in range(parts):
        s.inc(base.buf)
        outs.append(Ten(base.buf, base.n // parts, base.dt, nd is not None, nd))
    s.dec(base.buf)
    return outs


def op_sum_reduce(s: Sim, a: Ten, out_n: int) -> Ten:
    """mean / sum over the last dim: saves nothing (sizes only); backward expands to full size."""
    nd = s.node([a])
    return s.out(out_n, a.dt, nd)


# ---------------------------------------------------------------------------------------------
# The model's shape for training
# ---------------------------------------------------------------------------------------------

@dataclass
class Shape:
    """What the training replay needs from config.json (a decoder LLM)."""
    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    gemma: bool = False               # Gemma RMSNorm (float32, 1 + w), scaled embeddings
    sandwich: bool = False            # Gemma 2/3: post-attention and post-feedforward norms
    fused: bool = False               # Phi-3: qkv_proj and gate_up_proj
    final_softcap: bool = False
    layer_kinds: list[str] = field(default_factory=list)
    sliding_window: int | None = None

    def params(self) -> int:
        h, hd = self.hidden, self.head_dim
        per = h * self.heads * hd + 2 * h * self.kv_heads * hd + self.heads * hd * h + 3 * h * self.intermediate
        per += (2 + (2 if self.sandwich else 0)) * h + (2 * hd if self.qk_norm else 0)
        if self.qkv_bias:
            per += self.heads * hd + 2 * self.kv_heads * hd
        return per * self.layers + self.vocab * h * (1 if self.tied else 2) + h


def shape_from_arch(arch) -> Shape:
    """From estimators/arch.py's LlmArch. Raises UsageError for what the replay does not model."""
    from gpu_preflight.errors import UsageError

    if arch.is_moe:
        raise UsageError(f"{arch.model_type}: mixture-of-experts training is not modelled yet",
                         hint="the training estimate covers dense decoders (Llama, Qwen, Gemma, Mistral, Phi-3 style)")
    if arch.mla:
        raise UsageError(f"{arch.model_type}: multi-head latent attention training is not modelled yet",
                         hint="the training estimate covers dense decoders (Llama, Qwen, Gemma, Mistral, Phi-3 style)")
    mt = arch.model_type
    return Shape(
        model_type=mt, hidden=arch.hidden, layers=arch.layers, heads=arch.heads, kv_heads=arch.kv_heads,
        head_dim=arch.head_dim, intermediate=arch.intermediate, vocab=arch.vocab, tied=arch.tied,
        qkv_bias=arch.qkv_bias, o_bias=arch.o_bias, mlp_bias=arch.mlp_bias, qk_norm=arch.qk_norm,
        gemma=mt.startswith("gemma"), sandwich=mt in ("gemma2", "gemma3", "gemma3_text"), fused=mt == "phi3",
        final_softcap=mt == "gemma2", layer_kinds=list(arch.layer_kinds), sliding_window=arch.sliding_window)


def lora_target_set(shape: Shape, targets: tuple[str, ...]) -> set[str]:
    names = PHI3_NAMES if shape.fused else LINEAR_NAMES
    if not targets or "all-linear" in targets:
        return set(names)
    out = set()
    for t in targets:
        if shape.fused and t in ("q_proj", "k_proj", "v_proj"):
            out.add("qkv_proj")
        elif shape.fused and t in ("gate_proj", "up_proj"):
            out.add("gate_up_proj")
        else:
            out.add(t)
    return out


# ---------------------------------------------------------------------------------------------
# Building the parameters (the weights as allocated)
# ---------------------------------------------------------------------------------------------

@dataclass
class Linear:
    name: str
    n_in: int
    n_out: int
    w: Param
    bias: Param | None = None
    lora: tuple[Param, Param] | None = None
    nf4: bool = False


class Model:
    """Parameters per layer, in construction order, with their trainability."""

    def __init__(self, shape: Shape, st: TrainSetup, layer_ids: list[int]):
        self.shape, self.st = shape, st
        self.pdt = dtype_bytes(st.param_dtype)
        self.params: list[Param] = []
        full = st.mode == "full"
        # QLoRA (peft prepare_model_for_kbit_training): every parameter that is not 4-bit goes to float32
        self.odt = FP32 if st.mode == "qlora" else self.pdt
        h = shape.hidden
        self.embed = self._p("embed_tokens", shape.vocab * h, self.odt, full)
        self.layers: list[dict[str, Any]] = []
        self.targets = lora_target_set(shape, st.lora_targets) if st.mode != "full" else set()
        for i in layer_ids:
            self.layers.append(self._layer(i))
        self.norm = self._p("norm", h, self.odt, full)
        self.lm_head = self.embed if shape.tied else self._p("lm_head", shape.vocab * h, self.odt, full)
        self.lora_params: list[Param] = []
        if st.mode != "full":
            for lay in self.layers:
                for lin in lay["linears"]:
                    if lin.lora:
                        self.lora_params.extend(lin.lora)
            self.params.extend(self.lora_params)

    def _p(self, name: str, numel: int, dt: int, rg: bool, layer: int | None = None) -> Param:
        p = Param(name, numel, dt, rg, layer)
        self.params.append(p)
        return p

    def _lin(self, i: int, name: str, n_in: int, n_out: int, bias: bool = False) -> Linear:
        full = self.st.mode == "full"
        nf4 = self.st.mode == "qlora"
        w = self._p(f"{i}.{name}", n_in * n_out, self.pdt, full, i)
        if nf4:  # packed 4-bit weight + absmax per 64 (uint8 with double quantization + fp32 per 256 blocks)
            blocks = -(-n_in * n_out // NF4_BLOCK)
            w.dt = 1
            w.numel = -(-n_in * n_out // 2)
            self._p(f"{i}.{name}.absmax", blocks if self.st.double_quant else blocks * 4, 1, False, i)
            if self.st.double_quant:
                self._p(f"{i}.{name}.absmax2", -(-blocks // DQ_BLOCK) * 4, 1, False, i)
        b = self._p(f"{i}.{name}.bias", n_out, self.odt, full, i) if bias else None
        lin = Linear(name, n_in, n_out, w, b, nf4=nf4)
        if name in self.targets:
            r = self.st.lora_rank
            # peft: adapters in float32 when the base is 16-bit (autocast_adapter_dtype=True)
            adt = FP32 if self.pdt < FP32 or nf4 else self.pdt
            lin.lora = (Param(f"{i}.{name}.lora_A", r * n_in, adt, True, i),
                        Param(f"{i}.{name}.lora_B", n_out * r, adt, True, i))
        return lin

    def _layer(self, i: int) -> dict[str, Any]:
        sh = self.shape
        h, hd = sh.hidden, sh.head_dim
        full = self.st.mode == "full"
        q, kv = sh.heads * hd, sh.kv_heads * hd
        lay: dict[str, Any] = {"i": i, "kind": sh.layer_kinds[i] if i < len(sh.layer_kinds) else "full"}
        lay["norm1"] = self._p(f"{i}.input_layernorm", h, self.odt, full, i)
        if sh.fused:
            lay["qkv"] = self._lin(i, "qkv_proj", h, q + 2 * kv)
        else:
            lay["q"] = self._lin(i, "q_proj", h, q, sh.qkv_bias)
            lay["k"] = self._lin(i, "k_proj", h, kv, sh.qkv_bias)
            lay["v"] = self._lin(i, "v_proj", h, kv, sh.qkv_bias)
        lay["o"] = self._lin(i, "o_proj", q, h, sh.o_bias)
        if sh.qk_norm:
            lay["qn"] = self._p(f"{i}.q_norm", hd, self.odt, full, i)
            lay["kn"] = self._p(f"{i}.k_norm", hd, self.odt, full, i)
        if sh.fused:
            lay["gate_up"] = self._lin(i, "gate_up_proj", h, 2 * sh.intermediate)
        else:
            lay["gate"] = self._lin(i, "gate_proj", h, sh.intermediate, sh.mlp_bias)
            lay["up"] = self._lin(i, "up_proj", h, sh.intermediate, sh.mlp_bias)
        lay["down"] = self._lin(i, "down_proj", sh.intermediate, h, sh.mlp_bias)
        lay["norm2"] = self._p(f"{i}.post_attention_layernorm", h, self.odt, full, i)
        if sh.sandwich:
            lay["norm3"] = self._p(f"{i}.pre_feedforward_layernorm", h, self.odt, full, i)
            lay["norm4"] = self._p(f"{i}.post_feedforward_layernorm", h, self.odt, full, i)
        lay["linears"] = [v for v in lay.values() if isinstance(v, Linear)]
        return lay

    def trainable(self) -> list[Param]:
        return [p for p in self.params if p.rg]


# ---------------------------------------------------------------------------------------------
# The forward pass (transformers 5.17 decoder, Trainer-style loop)
# ---------------------------------------------------------------------------------------------

class Forward:
    def __init__(self, s: Sim, m: Model, st: TrainSetup, lump: dict[str, Any] | None = None):
        self.s, self.m, self.st, self.sh = s, m, st, m.shape
        self.autocast = st.mixed_precision in ("bf16", "fp16")
        self.cdt = BF16 if self.autocast else m.pdt    # compute dtype of matmuls
        self.b, self.t = st.micro_batch, st.seq_len
        self.N = self.b * self.t
        self.lump = lump

    # --- parameters as seen by ops ---
    def w(self, p: Param, cast: bool = True) -> Ten:
        """The weight tensor an op uses: under autocast, linear weights are cast to the compute
        dtype once per forward (autocast's weight cache holds the copy until the forward ends)."""
        t = p.ten
        if cast and self.autocast and p.dt == FP32:
            key = id(p)
            c = self.s.cast_cache.get(key)
            if c is None:
                c = op_cast(self.s, t, self.cdt)
                self.s.cast_cache[key] = c
            return c
        return t

    def act_cast(self, x: Ten) -> Ten:
        """Autocast casts a float32 activation entering a matmul to the compute dtype (a fresh copy each call)."""
        if self.autocast and x.dt != self.cdt:
            return op_cast(self.s, x, self.cdt)
        return self.s.view(x)

    def linear(self, x: Ten, lin: Linear) -> Ten:
        s = self.s
        xc = self.act_cast(x)
        if lin.nf4:  # bitsandbytes MatMul4Bit: dequantize to the compute dtype, matmul, drop
            deq = s.alloc(lin.n_in * lin.n_out * xc.dt)
            nd = s.node([xc], ws=[lin.n_in * lin.n_out * xc.dt])
            y = s.out(self.N * lin.n_out * xc.dt, xc.dt, nd)
            s.dec(deq)
        else:
            y = op_linear(s, xc, self.w(lin.w), self.N * lin.n_out,
                          self.w(lin.bias) if lin.bias is not None else None, cdt=xc.dt)
        s.drop(xc)
        if lin.lora is None:
            return y
        a, bb = lin.lora
        # peft LoRA Linear.forward: result + lora_B(lora_A(x.to(adapter dtype))) * scaling, back to result's dtype
        xa = op_cast(s, x, a.dt)
        xac = self.act_cast(xa)
        ha = op_linear(s, xac, self.w(a), self.N * self.st.lora_rank, cdt=xac.dt)
        s.drop(xac)
        hac = self.act_cast(ha)
        hb = op_linear(s, hac, self.w(bb), self.N * lin.n_out, cdt=hac.dt)
        s.drop(ha, hac)
        hs = op_scale(s, hb)
        s.drop(hb)
        odt = max(y.dt, hs.dt)
        r = op_add(s, y, hs, self.N * lin.n_out * odt, odt)
        s.drop(y, hs)
        out = op_cast(s, r, y.dt)
        s.drop(r, xa)
        return out

    def rmsnorm(self, x: Ten, p: Param, rows: int, width: int) -> Ten:
        """LlamaRMSNorm: x.float(); pow(2).mean(-1); x * rsqrt(var + eps); weight * x.to(input dtype).
        Gemma: the same in float32, then * (1 + weight.float()), then .type_as(x)."""
        s = self.s
        n32 = rows * width * FP32
        x32 = op_cast(s, x, FP32)
        sq = op_unary(s, x32, "in", ws=(n32, n32))          # pow(2) saves its input
        var = op_sum_reduce(s, sq, rows * FP32)
        s.drop(sq)
        ve = op_scale(s, var)                               # + eps
        s.drop(var)
        rs = op_unary(s, ve, "out")                         # rsqrt saves its result
        s.drop(ve)
        xn = op_mul(s, x32, rs, n32, FP32)
        s.drop(rs)
        w = p.ten
        if self.sh.gemma:
            w32 = op_cast(s, w, FP32)
            w1 = op_scale(s, w32)                           # 1.0 + w
            s.drop(w32)
            o32 = op_mul(s, xn, w1, n32, FP32)
            s.drop(w1, xn)
            out = op_cast(s, o32, x.dt)
            s.drop(o32, x32)
            return out
        xc = op_cast(s, xn, x.dt)
        s.drop(xn, x32)
        out = op_mul(s, w, xc, rows * width * max(x.dt, w.dt), max(x.dt, w.dt))
        s.drop(xc)
        return out

    def rope(self, x: Ten, cos: Ten, sin: Ten) -> Ten:
        """(x * cos) + (rotate_half(x) * sin); rotate_half = cat(-x2, x1) of two slices. cos/sin
        are in the hidden dtype, so float32 hidden states (fp32 weights) promote q and k to float32."""
        s = self.s
        if self.sh.fused:   # Phi-3: q[..., :rotary_dim] (a slice), rotated, then cat with the rest
            x = op_slice(s, x, x.n)
        dt = max(x.dt, cos.dt)
        n = x.n // x.dt * dt
        a = op_mul(s, x, cos, n, dt)
        x1 = op_slice(s, x, x.n // 2)
        x2 = op_slice(s, x, x.n // 2)
        nx2 = op_unary(s, x2, None)
        s.drop(x2)
        nd = s.node([nx2, x1], [nx2.n, x1.n], [True, True])
        rot = s.out(x.n, x.dt, nd)
        s.drop(nx2, x1)
        b = op_mul(s, rot, sin, n, dt)
        s.drop(rot)
        y = op_add(s, a, b, n, dt)
        s.drop(a, b)
        if self.sh.fused:
            y2 = op_elementwise(s, y, None, y.n, y.dt, kind="add")
            s.drop(y, x)
            y = y2
        return y

    def attention(self, x: Ten, lay: dict, cos: Ten, sin: Ten, masked: bool) -> Ten:
        s, sh = self.s, self.sh
        hd = sh.head_dim
        qn, kvn = sh.heads * hd, sh.kv_heads * hd
        if sh.fused:
            qkv = self.linear(x, lay["qkv"])
            dt = qkv.dt
            q = op_slice(s, qkv, self.N * qn * dt)
            k = op_slice(s, qkv, self.N * kvn * dt)
            v = op_slice(s, qkv, self.N * kvn * dt)
            s.drop(qkv)
        else:
            q = self.linear(x, lay["q"])
            k = self.linear(x, lay["k"])
            v = self.linear(x, lay["v"])
        if sh.qk_norm:
            q2 = self.rmsnorm(q, lay["qn"], self.N * sh.heads, hd)
            k2 = self.rmsnorm(k, lay["kn"], self.N * sh.kv_heads, hd)
            s.drop(q, k)
            q, k = q2, k2
        qr = self.rope(q, cos, sin)
        kr = self.rope(k, cos, sin)
        s.drop(q, k)
        if not self.st.grad_ckpt:
            # DynamicCache (use_cache defaults to True in training): DynamicLayer.update torch.cat copies K and V
            kc = op_elementwise(s, kr, None, kr.n, kr.dt, kind="add")
            vc = op_elementwise(s, v, None, v.n, v.dt, kind="add")
            s.drop(kr, v)
            kr, v = kc, vc
        groups = sh.heads // max(sh.kv_heads, 1)
        if masked and groups > 1:  # repeat_kv: expand + reshape copies K and V to every head
            kx, vx = self._repeat(kr, groups), self._repeat(v, groups)
            s.drop(kr, v)
            kr, v = kx, vx
        qc, kc, vc = self.act_cast(qr), self.act_cast(kr), self.act_cast(v)   # autocast: SDPA runs in bf16/fp16
        s.drop(qr, kr, v)
        out = self.sdpa(qc, kc, vc, masked)
        s.drop(qc, kc, vc)
        if sh.fused:
            # Phi-3's RoPE ends in torch.cat, so q is (b, heads, seq, dim)-contiguous; the kernel's output
            # takes q's layout (empty_like), and attn_output.transpose(1, 2).contiguous() copies it
            oc = op_elementwise(s, out, None, out.n, out.dt, kind="add")
            s.drop(out)
            out = oc
        o = self.linear(out, lay["o"])
        s.drop(out)
        return o

    def _repeat(self, x: Ten, groups: int) -> Ten:
        """repeat_kv: expand + reshape. With one KV head the reshape is a view of the expand (no copy);
        otherwise a copy. Backward sums the expanded gradient back to KV size."""
        s = self.s
        nd = s.node([x])
        if self.sh.kv_heads == 1:
            s.inc(x.buf)
            return Ten(x.buf, x.n * groups, x.dt, nd is not None, nd)
        return s.out(x.n * groups, x.dt, nd)

    def sdpa(self, q: Ten, k: Ten, v: Ten, masked: bool) -> Ten:
        """scaled_dot_product_attention. Without a mask: the flash kernel (bf16/fp16) saves q, k, v,
        output and logsumexp (b, heads, seq) float32; its backward allocates dq, dk, dv plus
        softmax_d (b, h, seq rounded to 128) float32, dq_accum (b, seq_r, h, head_dim rounded to 32)
        float32 and, for grouped-query attention, dk/dv expanded to all heads (FlashAttention-2
        mha_bwd as vendored in aten/src/ATen/native/transformers/cuda/flash_attn/flash_api.cpp).
        With a mask: the memory-efficient kernel; the boolean mask becomes an additive mask in the
        query dtype (b, 1, seq, seq) that autograd keeps; logsumexp is padded to 32 rows."""
        s, sh = self.s, self.sh
        b, t, h, hd = self.b, self.t, sh.heads, sh.head_dim
        n_out = b * t * h * hd * q.dt
        if self.st.device != "cuda":
            ws = []
        elif not masked and cudnn_attention(s.cc):
            # cuDNN SDPA (torch's first choice on Hopper and newer; the measurement child records
            # SDPBackend.CUDNN_ATTENTION on an H200 with torch 2.11): aten/src/ATen/native/cudnn/MHA.cpp
            # run_cudnn_SDP_bprop allocates dQ, dK, dV, then ONE workspace of mha_graph->get_workspace_size()
            # from the caching allocator. cudnn-frontend's SDPABackwardNode (node/scaled_dot_product_flash_attention.h,
            # get_fe_workspace_size_node) puts there dQ_accum (b, h_q, s_q, d) float32 and softmax_sum
            # (b, h_q, s_q) float32; with cuDNN >= 9 the dP workspace is off unless deterministic, and GQA's
            # full-head dK / dV are virtual (reduced in the kernel), so no expanded copies.
            ws = [b * h * t * hd * FP32 + b * h * t * FP32]
        else:
            t128 = -(-t // 128) * 128
            hd_r = -(-hd // 32) * 32 if hd <= 192 else 256
            ws = [b * h * t128 * FP32, b * h * t128 * hd_r * FP32]
            if not masked and sh.kv_heads < h:
                ws += [n_out, n_out]
        nd = s.node([q, k, v], ws=ws)
        out = s.out(n_out, q.dt, nd)
        lse_rows = -(-t // 32) * 32 if masked and self.st.device == "cuda" else t
        lse = s.alloc(b * h * lse_rows * FP32)
        bias = None
        if masked:
            bias = s.alloc(b * t * (-(-t // 16) * 16) * q.dt)
        if nd is not None:
            for buf in (q.buf, k.buf, v.buf, out.buf, lse, bias):
                s.save(nd, buf)
        s.dec(lse)
        s.dec(bias)
        return out

    def mlp(self, x: Ten, lay: dict) -> Ten:
        s, sh = self.s, self.sh
        if sh.fused:
            gu = self.linear(x, lay["gate_up"])
            gate, up = op_split(s, gu, 2)
            act = op_unary(s, gate, "in")
            s.drop(gate)
            prod = op_mul(s, up, act, up.n, up.dt)
            s.drop(up, act)
        else:
            gate = self.linear(x, lay["gate"])
            act = op_unary(s, gate, "in")                   # silu / gelu(tanh) save their input
            s.drop(gate)
            up = self.linear(x, lay["up"])
            prod = op_mul(s, act, up, up.n, up.dt)
            s.drop(act, up)
        y = self.linear(prod, lay["down"])
        s.drop(prod)
        return y

    def layer(self, h: Ten, lay: dict, cos: Ten, sin: Ten, masks: dict[str, bool]) -> Ten:
        s, sh, H = self.s, self.sh, self.sh.hidden
        x = self.rmsnorm(h, lay["norm1"], self.N, H)
        a = self.attention(x, lay, cos, sin, masks.get(lay["kind"], False))
        s.drop(x)
        if sh.sandwich:
            a2 = self.rmsnorm(a, lay["norm2"], self.N, H)
            s.drop(a)
            a = a2
        dt = max(h.dt, a.dt)
        h1 = op_add(s, h, a, self.N * H * dt, dt)
        s.drop(a)
        x2 = self.rmsnorm(h1, lay["norm3"] if sh.sandwich else lay["norm2"], self.N, H)
        mo = self.mlp(x2, lay)
        s.drop(x2)
        if sh.sandwich:
            m2 = self.rmsnorm(mo, lay["norm4"], self.N, H)
            s.drop(mo)
            mo = m2
        h2 = op_add(s, h1, mo, self.N * H * dt, dt)
        s.drop(h1, mo)
        return h2

    def checkpointed_layer(self, h: Ten, lay: dict, cos: Ten, sin: Ten, masks: dict[str, bool]) -> Ten:
        """torch.utils.checkpoint (use_reentrant=False): the layer runs with its saved tensors
        dropped (each node only counts them); the input is kept (_NoopSaveInputs) until the
        layer's backward is done."""
        s = self.s
        s.region = lay["i"]
        s.seq += 1
        saver = Node(s.seq, [], [], [], [], lay["i"])
        s.tape.append(saver)
        # the checkpoint keeps the layer input; its recompute closure (functools.partial over the
        # keyword arguments) keeps the rotary cos / sin and the masks alive as well
        for b in [h.buf, cos.buf, sin.buf] + self.mask_bufs:
            s.keep(saver, b)
        self.ckpt_in[lay["i"]] = (h.n, h.dt, h.rg)
        s.no_save = True
        out = self.layer(h, lay, cos, sin, masks)
        s.no_save = False
        s.region = None
        return out

    def run(self) -> Ten:
        """The model forward and ForCausalLMLoss; returns the loss (what a Trainer-style loop keeps)."""
        s, sh, st = self.s, self.sh, self.st
        H, N, b, t = sh.hidden, self.N, self.b, self.t
        self.ckpt_in: dict[int, tuple[int, int, bool]] = {}
        self.masks = {}
        for kind in set(sh.layer_kinds or ["full"]):
            win = sh.sliding_window if kind == "sliding" else None
            self.masks[kind] = bool(win) and t >= win     # masking_utils: no mask unless the window is shorter
        self.mask_bufs = mask_bufs = [s.alloc(b * t * t) for v in self.masks.values() if v]
        emb = self.m.embed
        # saves the indices only; CUDA's embedding_dense_backward sorts them (int64 buffers) and sums
        # per-token rows in float32 partials before writing the weight gradient
        nd = s.node([emb.ten], [0], ws=[N * I64 * 4, N * H * FP32] if st.device == "cuda" else [])
        e = s.out(N * H * emb.dt, emb.dt, nd)
        if sh.gemma:   # Gemma*ScaledWordEmbedding: embedding * embed_scale
            hid = op_mul(s, e, Ten(None, emb.dt, emb.dt, False), N * H * emb.dt, emb.dt)
        else:
            hid = s.view(e)
        if st.grad_ckpt and not hid.rg:  # gradient_checkpointing_enable -> enable_input_require_grads
            hid.rg = True
            hid.dest = "leaf"
        # rotary cos / sin (b, t, head_dim) in the hidden dtype, shared by all layers
        self.cos = cos = s.new(b * t * sh.head_dim * emb.dt, emb.dt, False)
        self.sin = sin = s.new(b * t * sh.head_dim * emb.dt, emb.dt, False)
        self.act_per_layer = 0
        for li, lay in enumerate(self.m.layers):
            if self.lump is not None and li == self.lump["after"]:
                # the middle layers keep what layer 1 kept, one block each (their ops are not replayed)
                self.lump["act"] = [s.alloc(self.act_per_layer) for _ in range(self.lump["layers"])]
                self.lump["seq"] = s.seq + 0.5
            a0 = s.al.allocated
            if st.grad_ckpt:
                nh = self.checkpointed_layer(hid, lay, cos, sin, self.masks)
            else:
                nh = self.layer(hid, lay, cos, sin, self.masks)
            s.drop(hid)
            hid = nh
            if li == 1:
                self.act_per_layer = s.al.allocated - a0
        fn = self.rmsnorm(hid, self.m.norm, N, H)
        s.drop(hid)
        s.drop(e)                    # inputs_embeds, the model's local variable, lives until here
        self.head_seq = s.seq + 1
        loss = self.head(fn)
        s.drop(fn, cos, sin)
        for mb in mask_bufs:
            s.dec(mb)
        return loss

    def head(self, x: Ten) -> Ten:
        """lm_head on every position (logits_to_keep=0), ForCausalLMLoss: logits.float(), then
        cross_entropy = log_softmax (saves its float32 result) + nll_loss."""
        s, sh, N, V = self.s, self.sh, self.N, self.sh.vocab
        s.head = True
        sl = op_slice(s, x, x.n)                       # hidden_states[:, slice(-0, None), :]
        xc = self.act_cast(sl)
        s.drop(sl)
        w = self.w(self.m.lm_head)
        logits = op_linear(s, xc, w, N * V, cdt=xc.dt)
        s.drop(xc)
        if sh.final_softcap:                           # Gemma 2: logits / cap, tanh, * cap
            a = op_scale(s, logits)
            s.drop(logits)
            tt = op_unary(s, a, "out")
            s.drop(a)
            logits = op_scale(s, tt)
            s.drop(tt)
        lab = s.alloc(self.b * (self.t + 1) * I64)     # labels padded by one, then shifted
        lab2 = s.alloc(N * I64)
        s.dec(lab)
        l32 = op_cast(s, logits, FP32)
        nd = s.node([l32])
        lp = s.out(N * V * FP32, FP32, nd)              # log_softmax
        if nd is not None:
            s.save(nd, lp.buf)
        s.drop(l32)
        nd2 = s.node([lp], [N * V * FP32])
        loss = s.out(FP32, FP32, nd2)
        if nd2 is not None:
            s.save(nd2, lp.buf)
            s.save(nd2, lab2)
        s.drop(lp)
        s.dec(lab2)
        s.head = False
        self.logits = logits                           # outputs.logits: dropped by the loop after forward
        return loss


# ---------------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------------

def route(s: Sim, t: Ten, g: Buf) -> None:
    """Deliver gradient `g` (a buffer we own one reference of) to tensor `t`'s destination."""
    d = t.dest
    if isinstance(d, Param):
        accumulate_param(s, d, g)
    elif isinstance(d, Node):
        if d.split is not None:
            d.split.append(g)
        elif d.gin is None:
            d.gin = g
        elif d.gin.refs == 1:
            s.dec(g)                     # InputBuffer: in-place add into the buffered gradient
        else:
            new = s.alloc(d.gin.n)
            s.dec(d.gin)
            s.dec(g)
            d.gin = new
    else:
        s.dec(g)


def accumulate_param(s: Sim, p: Param, g: Buf) -> None:
    """AccumulateGrad: the first gradient becomes .grad (stolen when nobody else holds it).
    A sharded .grad (ZeRO-2/3, FSDP) keeps only this rank's share after the reduce-scatter.

    A second gradient within the same backward only happens for tied embeddings (the lm_head's
    linear first, the embedding last). Both meet in the InputBuffer of the weight's AccumulateGrad
    node, and the sum is a NEW tensor: torch/csrc/autograd/input_buffer.cpp `accumulate` adds in
    place only when `can_accumulate_inplace(old_var)` (the last reference to the tensor and to its
    storage), and the linear's weight gradient is a view (FunctionsManual.cpp mm_mat2_backward
    returns `grad.t().mm(mat1).t()` for the transposed weight, TBackward0 transposes it back), whose
    base shares the storage. So three vocab x hidden tensors are live at once: the lm_head's
    gradient, the embedding's and their sum (measured on an H200 with torch 2.11 as two extra
    embedding-sized tensors over all gradients; the torch profiler on the CPU with torch 2.13 shows
    aten::add, not aten::add_, for this accumulation)."""
    if p.grad is not None and p.grad.view:
        total = s.alloc(p.grad.n, "grads")
        s.dec(p.grad)
        s.dec(g)
        p.grad = total
        return
    if p.grad is None:
        if p.grad_keep < g.n:
            keep = s.alloc(p.grad_keep, "grads")
            s.dec(g)
            p.grad = keep
        elif g.refs == 1:
            s.recat(g, "grads")
            p.grad = g
        else:
            p.grad = s.alloc(g.n, "grads")
            s.dec(g)
    else:
        s.dec(g)


def backward(s: Sim, loss: Ten, fwd: Forward) -> None:
    s.head = True
    g = s.alloc(FP32)                  # torch.ones_like(loss)
    s.head = False
    route(s, loss, g)
    recomputed: set[int] = set()
    lump = fwd.lump
    for nd in reversed(s.tape):
        if lump is not None and "act" in lump and nd.seq < lump["seq"]:
            _lump_backward(s, lump)
        if nd.region is not None and nd.region not in recomputed:
            recomputed.add(nd.region)
            recompute_layer(s, fwd, nd.region)
        s.head = nd.head
        run_node(s, nd)
        s.head = False
    if lump is not None and "act" in lump:
        _lump_backward(s, lump)
    s.tape.clear()


def run_node(s: Sim, nd: Node) -> None:
    """One backward node: allocate its input gradients and workspace, release what it saved and
    the gradient it received, pass the new gradients on."""
    gins = nd.split if nd.split is not None else ([nd.gin] if nd.gin is not None else [])
    if not gins:
        for b in nd.saved:
            s.unsave(b)
        nd.saved = []
        return
    grads: list[Buf | None] = []
    for i, (t, gb, pt) in enumerate(zip(nd.ins, nd.gbytes, nd.passthru)):
        if not t.rg:
            grads.append(None)
        elif pt:
            s.inc(gins[0])
            grads.append(gins[0])
        else:
            g = s.alloc(gb if gb else t.n)
            g.view = bool(nd.views and nd.views[i])
            grads.append(g)
    for b in [s.alloc(w) for w in nd.ws]:
        s.dec(b)
    for b in nd.saved:
        s.unsave(b)
    nd.saved = []
    for b in gins:
        s.dec(b)
    nd.gin, nd.split = None, None
    for t, gbuf in zip(nd.ins, grads):
        if gbuf is not None:
            route(s, t, gbuf)


def recompute_layer(s: Sim, fwd: Forward, region: int) -> None:
    """Non-reentrant checkpoint: rerun the layer's forward from its kept input; the tensors it
    saves are handed to the original nodes, in creation order."""
    nodes = [n for n in s.tape if n.region == region]
    n_in, dt, rg = fwd.ckpt_in[region]
    saver = nodes[0]
    lay = next(lay for lay in fwd.m.layers if lay["i"] == region)
    hin = Ten(saver.saved[0], n_in, dt, rg)
    s.inc(hin.buf)
    s.recompute = []
    seq = s.seq
    out = fwd.layer(hin, lay, fwd.cos, fwd.sin, fwd.masks)
    s.drop(out, hin)
    for c in list(s.cast_cache.values()):   # the recompute's autocast context exits: weight casts dropped
        s.drop(c)
    s.cast_cache.clear()
    got, s.recompute, s.seq = s.recompute, None, seq
    i = 0
    for nd in nodes[1:]:
        nd.saved = got[i:i + nd.nsaved]
        i += nd.nsaved
    for b in got[i:]:
        s.unsave(b)


def _lump_backward(s: Sim, lump: dict) -> None:
    """The middle layers, last first: free each one's saved activations, then add its gradients."""
    for blk, params in zip(reversed(lump.pop("act")), reversed(lump["params_by_layer"])):
        s.dec(blk)
        for p in params:
            if p.rg and p.grad is None:
                p.grad = s.alloc(p.grad_keep, "grads")


# ---------------------------------------------------------------------------------------------
# Optimizer step
# ---------------------------------------------------------------------------------------------

def optimizer_states(p: Param, opt: str, deepspeed: bool = False) -> list[int]:
    """Bytes of each state tensor the optimizer creates for a trainable parameter. DeepSpeed ZeRO keeps
    an fp32 master copy, an fp32 gradient and fp32 Adam moments in its partition: 16 bytes per parameter
    (its estimators' "18" minus the 16-bit gradient)."""
    n, dt = p.numel, p.dt
    if deepspeed and opt in ("adamw", "adamw_foreach"):
        return [n * FP32] * 4
    if opt in ("adamw", "adamw_foreach"):
        out = [n * dt, n * dt]                 # exp_avg, exp_avg_sq: zeros_like(param)
        if opt == "adamw":
            out.append(FP32)                   # fused: state["step"] is a float32 scalar on the device
        return out
    if opt in ("adamw_8bit", "paged_adamw_8bit"):
        if n < BNB_MIN_8BIT:
            return [n * FP32, n * FP32]
        blocks = -(-n // BNB_BLOCK_8BIT)
        return [n, n, blocks * FP32, blocks * FP32]   # state1/2 uint8 + absmax1/2 float32 per block
    if opt == "adafactor":
        if p.name.endswith(("embed_tokens", "lm_head", "_proj", "lora_A", "lora_B")):
            rows, cols = _matrix_dims(p)
            return [rows * dt, cols * dt]      # row_var (..., rows, 1), col_var (..., 1, cols)
        return [n * dt]
    return []                                  # sgd without momentum


def _matrix_dims(p: Param) -> tuple[int, int]:
    side = math.isqrt(p.numel)
    return side, max(p.numel // max(side, 1), 1)


def optimizer_step(s: Sim, params: list[Param], st: TrainSetup, states: dict[int, list[Buf]], shard: float) -> None:
    """One step: states are created on the first call (zeros_like); foreach temporaries are one
    param-sized tensor per parameter for AdamW (sqrt of exp_avg_sq) and Adafactor (var_estimate)."""
    opt = st.optimizer
    live = [p for p in params if p.rg and p.grad is not None]
    for p in live:
        if id(p) not in states:
            states[id(p)] = [s.alloc(max(int(b * shard), 1), "optimizer_states")
                             for b in optimizer_states(p, opt, deepspeed=st.zero > 0)]
    temps: list[Buf] = []
    if opt == "adamw_foreach" and not st.zero or opt == "adafactor":
        temps = [s.alloc(max(int(p.numel * p.dt * shard), 1)) for p in live]
    for b in temps:
        s.dec(b)


# ---------------------------------------------------------------------------------------------
# One replay
# ---------------------------------------------------------------------------------------------

@dataclass
class StepReplay:
    phases: dict[str, dict[str, Any]]
    weights_bytes: int
    trainable_params: int
    total_params: int
    state_bytes: int
    grad_bytes: int
    act_per_layer: int


def cudnn_attention(cc: tuple[int, int] | None) -> bool:
    """Whether SDPA without a mask runs cuDNN's attention: torch 2.11 tries it first on compute
    capability 9.0 and newer (measured: the child records the backend torch picks); flash before."""
    return cc is None or cc >= (9, 0)


def cublas_workspace(cc: tuple[int, int] | None) -> int:
    """PyTorch's default cuBLAS workspace per handle/stream: 4096 KiB x 8 on Hopper and newer, 4096 KiB x 2 +
    16 KiB x 8 before (aten/src/ATen/cuda/CublasHandlePool.cpp). The backward runs on autograd's device
    thread, which gets its own handle and so its own workspace."""
    if cc is None or cc >= (9, 0):
        return 4096 * 1024 * 8
    return 4096 * 1024 * 2 + 16 * 1024 * 8


def replay(shape: Shape, st: TrainSetup, cc: tuple[int, int] | None = None, steps: int = 2,
           explicit_layers: int | None = None) -> StepReplay:
    """Replay `steps` training steps; phase peaks are the maxima over the steps."""
    s = Sim(cuda=st.device == "cuda", cc=cc)
    L = shape.layers
    ids = _layer_ids(shape, explicit_layers)
    m = Model(shape, st, ids)
    lump = {"after": 2, "layers": L - len(ids)} if len(ids) < L else None
    shard = _shard_rules(st)
    for p in m.params:               # weights, allocated as the model is built; adapters after
        if p not in m.lora_params:
            _alloc_param(s, p, shard)
    for p in m.lora_params:
        _alloc_param(s, p, shard)
    if lump is not None:
        lump["params_by_layer"] = _lump_params(m, lump["layers"], s, shard)
    weights = s.al.allocated
    s.alloc(2 * st.micro_batch * st.seq_len * I64)          # input_ids and labels
    if st.device == "cuda":
        s.alloc(cublas_workspace(cc))                        # first matmul of the forward
    states: dict[int, list[Buf]] = {}
    all_params = m.params + ([p for ps in lump["params_by_layer"] for p in ps] if lump else [])
    fwd = None
    for step in range(steps):
        fwd = Forward(s, m, st, lump)
        s.start_phase("forward")
        loss = fwd.run()
        s.drop(fwd.logits)           # the loop keeps only the loss
        for c in list(s.cast_cache.values()):
            s.drop(c)                # autocast exits: its weight-cast cache is cleared
        s.cast_cache.clear()
        s.start_phase("backward")
        if step == 0 and st.device == "cuda":
            s.alloc(cublas_workspace(cc))                    # autograd thread's cuBLAS handle
        backward(s, loss, fwd)
        s.drop(loss)
        s.start_phase("optimizer")
        optimizer_step(s, all_params, st, states, shard["states"])
        for p in all_params:         # zero_grad(set_to_none=True)
            if p.grad is not None:
                s.dec(p.grad)
                p.grad = None
    trainable = [p for p in all_params if p.rg]
    return StepReplay(
        phases=s.phases, weights_bytes=weights,
        trainable_params=_trainable_count(shape, st, m, lump),
        total_params=shape.params(),
        state_bytes=sum(b.n for bl in states.values() for b in bl),
        grad_bytes=sum(p.grad_keep for p in trainable),
        act_per_layer=fwd.act_per_layer if fwd else 0)


def _trainable_count(shape: Shape, st: TrainSetup, m: Model, lump) -> int:
    if st.mode == "full":
        return shape.params()
    per = {}
    for p in m.lora_params:
        per.setdefault(p.layer, 0)
        per[p.layer] += p.numel
    one = next(iter(per.values()), 0)
    return one * shape.layers


def _layer_ids(shape: Shape, explicit: int | None) -> list[int]:
    L = shape.layers
    if explicit is None or L <= explicit:
        return list(range(L))
    ids = [0, 1]
    kinds_seen = {shape.layer_kinds[0] if shape.layer_kinds else "full"}
    for i in range(2, L - 2):
        k = shape.layer_kinds[i] if i < len(shape.layer_kinds) else "full"
        if k not in kinds_seen:
            ids.append(i)
            kinds_seen.add(k)
    ids += [L - 2, L - 1]
    return sorted(set(ids))


def _lump_params(m: Model, count: int, s: Sim, shard: dict) -> list[list[Param]]:
    """The middle layers' parameters: copies of layer 1's tensors, allocated tensor by tensor."""
    li = m.layers[1]["i"]
    proto = [p for p in m.params if p.layer == li and p not in m.lora_params]
    lora = [p for p in m.lora_params if p.layer == li]
    out = []
    for j in range(count):
        layer = []
        for p in proto + lora:
            q = Param(f"lump{j}.{p.name}", p.numel, p.dt, p.rg)
            _alloc_param(s, q, shard)
            layer.append(q)
        out.append(layer)
    return out


def _alloc_param(s: Sim, p: Param, shard: dict) -> None:
    n = p.numel * p.dt
    keep = max(int(n * shard["weights"]), 1)
    p.buf = s.alloc(keep, "weights")
    p.ten = Ten(p.buf, n, p.dt, p.rg, p)
    p.grad_keep = max(int(n * shard["grads"]), 1)


def _shard_rules(st: TrainSetup) -> dict[str, float]:
    """Fraction of each model state one GPU keeps (ZeRO paper, DeepSpeed and FSDP docs; docs/training.md)."""
    n = max(st.gpus, 1)
    w = g = o = 1.0
    if st.fsdp == "full_shard" or st.zero == 3:
        w = g = o = 1.0 / n
    elif st.fsdp == "shard_grad_op" or st.zero == 2:
        g = o = 1.0 / n
    elif st.zero == 1:
        o = 1.0 / n
    if st.offload_optimizer == "cpu":
        o = 0.0
    k = st.master_scale
    return {"weights": w * k, "grads": g * k, "states": o * k}




# ---------------------------------------------------------------------------------------------
# Several GPUs: what one GPU keeps (ZeRO, FSDP, DDP) and host RAM for CPU offload
# ---------------------------------------------------------------------------------------------

DS_REDUCE_BUCKET = 500_000_000     # deepspeed runtime/zero/config.py: reduce_bucket_size default (elements)
DS_PREFETCH_BUCKET = 50_000_000    # stage3_prefetch_bucket_size default (elements)
DS_BUFFER_FACTOR = 1.5             # additional_buffer_factor of DeepSpeed's own estimators


def largest_layer_params(shape: Shape) -> int:
    return (shape.params() - shape.vocab * shape.hidden * (1 if shape.tied else 2) - shape.hidden) // shape.layers


def multi_gpu_extra(shape: Shape, st: TrainSetup) -> tuple[int, list[str]]:
    """Per-GPU bytes the replay does not allocate itself: communication buckets and gathered
    parameters. Returns (bytes, assumptions)."""
    n, P = max(st.gpus, 1), shape.params()
    notes = []
    if n > 1 and not st.zero and not st.fsdp:
        notes.append("DDP: its reducer keeps gradient buckets as large as all gradients together "
                     "(gradient_as_bucket_view=False, the default; torch.nn.parallel.DistributedDataParallel docs)")
        return P * dtype_bytes(st.param_dtype), notes
    if st.zero in (1, 2):
        b = min(DS_REDUCE_BUCKET, P) * BF16
        notes.append(f"DeepSpeed ZeRO-{st.zero}: contiguous gradient bucket of reduce_bucket_size (5e8 elements) "
                     f"in 16 bits, {b / GIB:.2f} GiB")
        return b, notes
    if st.zero == 3:
        b = 4 * largest_layer_params(shape) + DS_PREFETCH_BUCKET * BF16
        notes.append("DeepSpeed ZeRO-3: the largest layer gathered (4 bytes x its parameters, as DeepSpeed's "
                     "estimate_zero3_model_states_mem_needs counts it) plus the 5e7-element prefetch bucket")
        return b, notes
    if st.fsdp:
        gathered = 2 * largest_layer_params(shape) * BF16
        if st.fsdp == "full_shard":
            gathered += shape.vocab * shape.hidden * BF16
        notes.append("FSDP: one decoder layer gathered plus the next one prefetched (16-bit compute copies); "
                     "full_shard also gathers the embeddings / lm_head of the root unit")
        return gathered, notes
    return 0, notes


def host_ram_bytes(shape: Shape, st: TrainSetup) -> int | None:
    """Host RAM of the node for optimizer offload: DeepSpeed's own estimators (stage_1_and_2.py
    estimate_zero2_model_states_mem_needs, stage3.py estimate_zero3_model_states_mem_needs with
    zero_init); FSDP CPUOffload keeps fp32 parameters, gradients and Adam's two states (16 bytes per
    parameter over all ranks of the node)."""
    if st.offload_optimizer != "cpu":
        return None
    P, n = shape.params(), max(st.gpus, 1)
    if st.mode != "full":
        P = max(P // 100, 1)  # adapters only; refined by the caller with the real trainable count
    if st.zero == 3:
        return int(P * 16 * DS_BUFFER_FACTOR)
    if st.zero in (1, 2):
        return int(P * max(4 * n, 16) * DS_BUFFER_FACTOR)
    return int(P * 16)


def deepspeed_layout(st: TrainSetup) -> bool:
    return st.zero > 0


# ---------------------------------------------------------------------------------------------
# The process overhead of a training process (the one fitted constant)
# ---------------------------------------------------------------------------------------------

# (compute capability major, torch major.minor) -> NVML process bytes minus torch's reserved bytes
# in a training process (CUDA context, kernel images, cuBLAS and cuDNN handles; cuDNN's attention
# kernels are loaded by the training step, which the inference value does not include).
TRAIN_OVERHEAD = {
    (9, "2.11"): {
        "bytes": 796_917_760,
        "short": "measured for training on H200 + torch 2.11.0+cu130 (calibration/raw/train-h200.jsonl)",
        "source": "calibration/raw/train-h200.jsonl: NVIDIA H200, driver 580.159.04, torch 2.11.0+cu130, "
                  "transformers 5.17.0, peft 0.21.0, cuDNN 9.19. Per case, the peak NVML process bytes minus "
                  "the peak torch.cuda.max_memory_reserved over both steps; the median over the 54 cases "
                  "not held out (5 models) is 760 MiB, every one of them between 758 and 762 MiB. The 26 "
                  "held-out cases (3 models) were not used; their median is 758 MiB.",
    },
}
TRAIN_OVERHEAD_KEY = (9, "2.11")


def train_process_overhead(cc: tuple[int, int] | None, torch_version: str | None) -> tuple[int, str]:
    """(bytes, provenance) for a training process; falls back to the nearest measurement and says so."""
    tv = ".".join((torch_version or "").split("+")[0].split(".")[:2])
    m = TRAIN_OVERHEAD.get((cc[0] if cc else None, tv))
    if m is not None:
        return m["bytes"], m["short"]
    m = TRAIN_OVERHEAD[TRAIN_OVERHEAD_KEY]
    return m["bytes"], m["short"] + "; not measured for this GPU / torch, used as is"


# ---------------------------------------------------------------------------------------------
# The estimate for one setup, on one target
# ---------------------------------------------------------------------------------------------

@dataclass
class TrainEstimate:
    phases: dict[str, dict[str, Any]]          # phase -> peaks and breakdown at the peak
    peak_phase: str
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    peak_process_bytes: int
    breakdown: dict[str, int]
    trainable_params: int
    total_params: int
    host_ram_bytes: int | None
    assumptions: list[str] = field(default_factory=list)


def estimate_training(shape: Shape, st: TrainSetup, cc: tuple[int, int] | None, overhead_bytes: int,
                      explicit_layers: int | None = None) -> TrainEstimate:
    st = _effective(st)
    r = replay(shape, st, cc, explicit_layers=explicit_layers)
    extra, notes = multi_gpu_extra(shape, st)
    paged = r.state_bytes if st.optimizer == "paged_adamw_8bit" else 0
    phases = {}
    for name, p in r.phases.items():
        bd = {k: int(v) for k, v in p["at_peak"].items()}
        reserved = p["reserved"] + extra
        phases[name] = {
            "peak_allocated_bytes": p["alloc"] + extra,
            "peak_reserved_bytes": reserved,
            "peak_process_bytes": reserved + overhead_bytes,
            "breakdown": {**bd, "allocator": reserved - p["alloc"] - extra, "context": overhead_bytes,
                          **({"communication_buffers": extra} if extra else {})},
        }
    peak_phase = max(phases, key=lambda k: phases[k]["peak_process_bytes"])
    top = phases[peak_phase]
    host = host_ram_bytes(shape, st)
    if host is not None and st.mode != "full":
        host = int(r.trainable_params * (16 * DS_BUFFER_FACTOR if st.zero else 16))
    assumptions = list(notes)
    if paged:
        assumptions.append("paged 8-bit AdamW: its states live in CUDA unified memory, counted as resident; the "
                           "driver can page them to host RAM under pressure")
    return TrainEstimate(phases=phases, peak_phase=peak_phase, peak_allocated_bytes=top["peak_allocated_bytes"],
                         peak_reserved_bytes=top["peak_reserved_bytes"], peak_process_bytes=top["peak_process_bytes"],
                         breakdown=dict(top["breakdown"]), trainable_params=r.trainable_params,
                         total_params=r.total_params, host_ram_bytes=host, assumptions=assumptions)


def _effective(st: TrainSetup) -> TrainSetup:
    """DeepSpeed (--zero) runs the module in 16 bits with fp32 master weights and fp32 Adam states in
    its optimizer partition: the replay sees a bf16 model and DeepSpeed's 16 bytes per parameter.
    FSDP with float32 weights and mixed precision computes with gathered 16-bit copies
    (MixedPrecision(param_dtype=bf16)): the replay sees a bf16 model whose shards (weights, gradients,
    optimizer states) are twice as large."""
    if st.zero and st.param_dtype == "float32":
        return dataclasses.replace(st, param_dtype="bfloat16")
    if st.fsdp and st.param_dtype == "float32" and st.mixed_precision != "no":
        return dataclasses.replace(st, param_dtype="bfloat16", master_scale=2.0)
    return st


# ---------------------------------------------------------------------------------------------
# The engine's flags, search, suggestions and report
# ---------------------------------------------------------------------------------------------

from gpu_preflight.estimators.engines.base import Engine, Option, positive_int


def _bool_flag(text: str) -> bool:
    import argparse

    t = str(text).lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not on/off")


def _targets_list(text: str) -> list[str]:
    import argparse

    names = [t.strip() for t in str(text).split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give module names, e.g. q_proj,v_proj or all-linear")
    return names


def _zero(text: str) -> int:
    import argparse

    if str(text) not in ("0", "1", "2", "3"):
        raise argparse.ArgumentTypeError("ZeRO stage must be 0, 1, 2 or 3")
    return int(text)


def _ram(text: str) -> float:
    from gpu_preflight.estimators.engines.base import bounded_float

    return bounded_float(1, 1 << 20)(text)


OPTIONS = (
    Option("--train", "train", "estimate fine-tuning: full, lora or qlora (selects --engine training)",
           choices=("full", "lora", "qlora")),
    Option("--micro-batch", "micro_batch", "sequences per GPU per step (default 1)", type=positive_int, default=1),
    Option("--seq-len", "seq_len", "tokens per sequence (default 2048)", type=positive_int, default=2048),
    Option("--grad-checkpointing", "grad_checkpointing", "recompute each decoder layer in backward "
           "(gradient_checkpointing_enable, use_reentrant=False)", action="store_true", default=False),
    Option("--optimizer", "optimizer", "adamw (torch fused, the Trainer default), adamw_foreach (torch.optim.AdamW "
           "defaults), adamw_8bit, paged_adamw_8bit (bitsandbytes), adafactor (torch), sgd (default adamw)",
           default="adamw", choices=OPTIMIZERS),
    Option("--mixed-precision", "mixed_precision", "autocast around the forward as Trainer does: bf16 (default), "
           "fp16, no", default="bf16", choices=("bf16", "fp16", "no")),
    Option("--dtype", "dtype", "weights as loaded: bfloat16 (default) or float32 (fp32 master weights)",
           default="bfloat16"),
    Option("--lora-rank", "lora_rank", "LoRA rank r (default 16)", type=positive_int, default=16),
    Option("--lora-targets", "lora_targets", "modules with adapters: all-linear (default) or a comma list, e.g. "
           "q_proj,v_proj", type=_targets_list, default=["all-linear"], metavar="NAMES"),
    Option("--gpus", "gpus", "data-parallel GPUs (default: the target's count)", type=positive_int, metavar="N"),
    Option("--zero", "zero", "DeepSpeed ZeRO stage 0-3", type=_zero, default=0, metavar="0|1|2|3"),
    Option("--fsdp", "fsdp", "PyTorch FSDP sharding", choices=("full_shard", "shard_grad_op")),
    Option("--offload-optimizer", "offload_optimizer", "keep optimizer states in host RAM", choices=("cpu",)),
    Option("--ram-gb", "ram_gb", "host RAM per node in GiB, checked against what CPU offload needs",
           type=_ram, metavar="GIB"),
)
SEARCH_LAYERS = 6
MAX_MICRO_BATCH = 4096


def setup_from_options(o: dict[str, Any], gpus: int) -> TrainSetup:
    from gpu_preflight.errors import UsageError
    from gpu_preflight.estimators.plan import parse_dtype

    mode = o.get("train") or "full"
    pdt = parse_dtype(o.get("dtype") or "bfloat16")
    if o.get("zero") and o.get("fsdp"):
        raise UsageError("--zero and --fsdp are two ways to shard", hint="choose one: --zero 3 or --fsdp full_shard")
    n = o.get("gpus") or gpus
    if o.get("mixed_precision") == "fp16" and pdt != "float32":
        raise UsageError("fp16 mixed precision needs float32 weights (GradScaler refuses fp16 gradients)",
                         hint="add --dtype float32, or use --mixed-precision bf16")
    if mode == "qlora" and pdt == "float32":
        pdt = "bfloat16"
    return TrainSetup(mode=mode, micro_batch=o["micro_batch"], seq_len=o["seq_len"],
                      grad_ckpt=bool(o["grad_checkpointing"]), optimizer=o["optimizer"],
                      mixed_precision=o["mixed_precision"], param_dtype=pdt, lora_rank=o["lora_rank"],
                      lora_targets=tuple(o["lora_targets"] or ["all-linear"]), gpus=n, zero=o.get("zero") or 0,
                      fsdp=o.get("fsdp"), offload_optimizer=o.get("offload_optimizer"))


def _fits(shape: Shape, st: TrainSetup, cc, overhead: int, memory: int) -> tuple[bool, int]:
    e = estimate_training(shape, st, cc, overhead, explicit_layers=SEARCH_LAYERS)
    return e.peak_process_bytes <= memory, e.peak_process_bytes


def search_max(lo: int, hi: int, ok: Callable[[int], bool]) -> int | None:
    """Largest n in [lo, hi] with ok(n), ok decreasing; doubling then bisection (about 2 log2(hi) calls)."""
    if not ok(lo):
        return None
    good, n = lo, lo
    while n < hi:
        n = min(n * 2, hi)
        if ok(n):
            good = n
        else:
            break
    else:
        return good
    bad = n
    while bad - good > max(1, good // 64):
        mid = (good + bad) // 2
        if ok(mid):
            good = mid
        else:
            bad = mid
    return good


def max_micro_batch(shape: Shape, st: TrainSetup, cc, overhead: int, memory: int) -> int | None:
    return search_max(1, MAX_MICRO_BATCH, lambda b: _fits(shape, dataclasses.replace(st, micro_batch=b), cc,
                                                          overhead, memory)[0])


def max_seq_len(shape: Shape, st: TrainSetup, cc, overhead: int, memory: int, cap: int) -> int | None:
    return search_max(16, max(cap, 16), lambda t: _fits(shape, dataclasses.replace(st, seq_len=t), cc,
                                                        overhead, memory)[0])


def suggestions(shape: Shape, st: TrainSetup, cc, overhead: int, memory: int, gpu_label: str) -> list[dict[str, Any]]:
    """Changes in order of what they cost the run (speed, then quality, then hardware); the first that
    fits is marked `cheapest`."""
    cands: list[tuple[str, str, TrainSetup]] = []
    if not st.grad_ckpt:
        cands.append(("gradient checkpointing (recompute layers in backward, ~30% slower)", "--grad-checkpointing",
                      dataclasses.replace(st, grad_ckpt=True)))
    if st.optimizer in ("adamw", "adamw_foreach"):
        cands.append(("8-bit AdamW (bitsandbytes)", "--optimizer adamw_8bit",
                      dataclasses.replace(st, optimizer="adamw_8bit")))
    if st.micro_batch > 1:
        cands.append(("micro-batch 1 with gradient accumulation for the same effective batch", "--micro-batch 1",
                      dataclasses.replace(st, micro_batch=1)))
    if st.mode == "full":
        cands.append(("LoRA instead of full fine-tuning", "--train lora", dataclasses.replace(st, mode="lora")))
        cands.append(("LoRA + checkpointing", "--train lora --grad-checkpointing",
                      dataclasses.replace(st, mode="lora", grad_ckpt=True)))
    if st.mode != "qlora":
        cands.append(("QLoRA (4-bit NF4 base, LoRA adapters) + checkpointing", "--train qlora --grad-checkpointing",
                      dataclasses.replace(st, mode="qlora", grad_ckpt=True, param_dtype="bfloat16")))
    ck = "" if st.grad_ckpt else " --grad-checkpointing"
    if st.offload_optimizer != "cpu" and st.mode == "full":
        z = max(st.zero, 2)
        cands.append(("optimizer states in host RAM (DeepSpeed ZeRO-Offload) + checkpointing",
                      "--offload-optimizer cpu" + (f" --zero {z}" if z != st.zero else "") + ck,
                      dataclasses.replace(st, offload_optimizer="cpu", zero=z, fsdp=None, grad_ckpt=True)))
    for n in (2, 4, 8, 16):
        if n > st.gpus and st.mode == "full":
            cands.append((f"{n} GPUs with ZeRO-3 (DeepSpeed) + checkpointing", f"--gpu {gpu_label}:{n} --zero 3" + ck,
                          dataclasses.replace(st, gpus=n, zero=3, fsdp=None, grad_ckpt=True)))
    out = []
    for change, flag, s2 in cands:
        ok, peak = _fits(shape, s2, cc, overhead, memory)
        out.append({"change": change, "flag": flag, "peak_process_bytes": peak, "fits": ok,
                    "headroom_bytes": memory - peak, "measured": _is_measured(s2)})
        if ok and "GPUs with ZeRO-3" in change:
            break
    first = next((s for s in out if s["fits"]), None)
    for s in out:
        s["cheapest"] = s is first
    return out


def _is_measured(st: TrainSetup) -> bool:
    """Whether this setup's kind was checked on a GPU (docs/accuracy.md, training section)."""
    return (st.mode in ("full", "lora") and st.optimizer in ("adamw", "adamw_foreach", "sgd", "adafactor")
            and st.gpus == 1 and not st.zero and not st.fsdp and not st.offload_optimizer
            and st.mixed_precision in ("bf16", "no"))


def unmeasured_parts(st: TrainSetup) -> list[str]:
    out = []
    if st.mode == "qlora":
        out.append("QLoRA: bitsandbytes NF4 storage and dequantization modelled from its source; not measured")
    if st.optimizer in ("adamw_8bit", "paged_adamw_8bit"):
        out.append("8-bit AdamW states modelled from bitsandbytes' source (uint8 states, fp32 absmax per 256 values; "
                   "tensors under 4096 values keep fp32 states); not measured")
    if st.gpus > 1 or st.zero or st.fsdp:
        out.append("multi-GPU sharding modelled from DeepSpeed's / FSDP's partitioning rules; not measured (only one "
                   "GPU was lent for calibration)")
    if st.offload_optimizer:
        out.append("CPU offload: host RAM from DeepSpeed's own estimators; not measured")
    if st.mixed_precision == "fp16":
        out.append("fp16 autocast modelled like bf16 (GradScaler adds only scalars); not measured")
    return out


def train_report(source, o: dict[str, Any], targets: list, common: dict[str, Any]) -> dict[str, Any]:
    from gpu_preflight import __version__
    from gpu_preflight.estimators.arch import parse_llm
    from gpu_preflight.estimators.plan import (
        REPORT_SCHEMA,
        REPORT_SCHEMA_VERSION,
        _arch_summary,
    )

    arch = parse_llm(source.config)
    shape = shape_from_arch(arch)
    first = targets[0] if targets else None
    st = setup_from_options(o, first.count if first else 1)
    cc = first.cc if first else None
    overhead, provenance = train_process_overhead(cc, common.get("torch"))
    est = estimate_training(shape, st, cc, overhead)
    assumptions = list(arch.warnings) + _assumptions(shape, st) + est.assumptions + unmeasured_parts(st)
    assumptions.append(f"process overhead {overhead / GIB:.2f} GiB (CUDA context, kernels, library handles): "
                       f"{provenance}")
    fits = []
    for t in targets:
        e = est if t is first else estimate_training(shape, st, t.cc, train_process_overhead(t.cc, common.get("torch"))[0])
        fits.append({"gpu": t.name, "gpu_id": t.gpu_id, "count": t.count, "memory_bytes": t.memory_bytes,
                     "memory_source": t.source, "fits": e.peak_process_bytes <= t.memory_bytes,
                     "headroom_bytes": t.memory_bytes - e.peak_process_bytes,
                     "peak_process_bytes_per_gpu": e.peak_process_bytes})
    report = {
        "schema": REPORT_SCHEMA, "schema_version": REPORT_SCHEMA_VERSION, "tool_version": __version__,
        "model": source.name, "kind": "llm", "engine": "training",
        "workload": _workload(st),
        "architecture": _arch_summary(arch),
        "training": {"trainable_params": est.trainable_params, "total_params": est.total_params,
                     "tokens_per_step_per_gpu": st.micro_batch * st.seq_len},
        "peak_allocated_bytes": est.peak_allocated_bytes, "peak_reserved_bytes": est.peak_reserved_bytes,
        "peak_process_bytes": est.peak_process_bytes, "peak_phase": est.peak_phase,
        "breakdown": est.breakdown, "phases": est.phases,
        "host_ram_bytes": est.host_ram_bytes,
        "host_ram_fits": None if est.host_ram_bytes is None or not o.get("ram_gb") else
        est.host_ram_bytes <= o["ram_gb"] * GIB,
        "fits": fits, "max_micro_batch": None, "max_seq_len": None, "max_batch": None, "max_context_tokens": None,
        "suggestions": [], "measured": _is_measured(st), "unmeasured": unmeasured_parts(st),
        "assumptions": assumptions,
    }
    if first is not None:
        cap = arch.max_positions or 131072
        report["max_micro_batch"] = report["max_batch"] = max_micro_batch(shape, st, cc, overhead, first.memory_bytes)
        report["max_seq_len"] = report["max_context_tokens"] = max_seq_len(shape, st, cc, overhead,
                                                                           first.memory_bytes, cap)
        if not fits[0]["fits"]:
            report["suggestions"] = suggestions(shape, st, cc, overhead, first.memory_bytes,
                                                first.gpu_id or first.name)
    return report


def _workload(st: TrainSetup) -> dict[str, Any]:
    return {"train": st.mode, "micro_batch": st.micro_batch, "seq_len": st.seq_len,
            "grad_checkpointing": st.grad_ckpt, "optimizer": st.optimizer, "mixed_precision": st.mixed_precision,
            "dtype": st.param_dtype, "lora_rank": st.lora_rank if st.mode != "full" else None,
            "lora_targets": list(st.lora_targets) if st.mode != "full" else None, "gpus": st.gpus,
            "zero": st.zero, "fsdp": st.fsdp, "offload_optimizer": st.offload_optimizer}


def _assumptions(shape: Shape, st: TrainSetup) -> list[str]:
    out = [("a Trainer-style loop: forward under torch.autocast when mixed precision is on, only the loss kept, "
            "loss.backward(), optimizer.step(), zero_grad(set_to_none=True); two steps replayed, the second "
            "with the optimizer states resident"),
           "SDPA attention: without a mask cuDNN's kernel on Hopper and newer (what torch 2.11 picks on an H200), "
           "the flash kernel before; the memory-efficient kernel with a mask"]
    if st.mode != "full":
        out.append("peft LoRA: adapters in float32 on a 16-bit base (autocast_adapter_dtype=True), dropout 0, "
                   f"targets {', '.join(sorted(lora_target_set(shape, st.lora_targets)))}")
    if st.mode == "qlora":
        out.append("QLoRA recipe: bitsandbytes NF4 with double quantization, prepare_model_for_kbit_training (every "
                   "non-4-bit parameter in float32)")
    if shape.sliding_window and st.seq_len >= shape.sliding_window:
        out.append(f"sequence >= sliding window ({shape.sliding_window}): transformers builds a mask, SDPA copies K/V "
                   f"to every head and keeps a {st.seq_len}x{st.seq_len} additive mask per sliding layer")
    if not st.grad_ckpt:
        out.append("use_cache stays True (the config default): each layer's K and V are copied into a DynamicCache "
                   "during the forward")
    return out


def run_engine(source, o: dict[str, Any], targets: list, common: dict[str, Any]) -> dict[str, Any]:
    return train_report(source, o, targets, common)


ENGINES = (Engine("training", ("llm",), "fine-tuning a decoder LLM: full, LoRA, QLoRA; ZeRO / FSDP",
                  OPTIONS, run_engine, selected_by=("train",)),)
