"""llama.cpp's compute buffers, by replaying what ggml does with the reservation graph.

At start-up llama.cpp builds the worst-case graph (one micro-batch of n_ubatch tokens, all of them
output, attending over the whole KV cache), lets ggml's scheduler assign every op to a device and
split the graph where data crosses devices, and lets ggml's graph allocator lay the intermediate
tensors out in one buffer per device. The buffer sizes it logs ("CUDA0 compute buffer size",
"CUDA_Host compute buffer size") are the high-water marks of that layout. This module rebuilds the
graph with the tensors that matter (every tensor wider than a few rows; the per-layer weights are
leaves) and replays the same three steps:

- graph order: ggml_build_forward_expand's depth-first walk (ggml/src/ggml.c, ggml_visit_parents);
  the order in which llama.cpp expands nodes (src/llama-graph.cpp, build_attn: Q, V, K, then the
  KV-cache writes) is kept;
- scheduling: ggml_backend_sched_split_graph (ggml/src/ggml-backend.cpp) passes 1-5: ops follow
  their weights, a large-batch op whose weight sits in host memory is offloaded to the GPU
  (op_offload, batch >= 32: ggml-cuda.cu get_op_batch_size), GPU assignments expand up and down,
  graph inputs live on the CPU, and each split copies the tensors it reads from another device into
  its own buffer at the split's start;
- allocation: ggml_gallocr (ggml/src/ggml-alloc.c): leaves first, in-place reuse of a parent for
  the ops in ggml_op_can_inplace, best-fit over free blocks except the last, a tensor freed when
  its last consumer is done, graph outputs never freed.

Source: llama.cpp 0c1e57098 (llama-cpp-python 0.3.36, 2026-10) for the graph; the allocator and
scheduler rules are the same in 4227c9be (llama-cpp-python 0.3.16, 2025-08). The pure-Python
replay costs a few milliseconds per layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import functools

INPUT, OUTPUT = 1, 2
INPLACE_OPS = frozenset({"SCALE", "ADD", "MUL", "DIV", "UNARY", "ROPE", "RMS_NORM", "CLAMP", "SOFT_MAX", "SUB",
                         "SQR", "SQRT", "ADD1", "ADD_ID"})  # ggml_op_can_inplace (ggml-alloc.c)
VIEW_OPS = frozenset({"VIEW", "RESHAPE", "PERMUTE", "TRANSPOSE"})
CUDA_ALIGN = 128      # ggml_backend_cuda_buffer_type_get_alignment
HOST_ALIGN = 64       # CUDA_Host and CPU buffers: TENSOR_ALIGNMENT (ggml-backend-impl / ggml-cpu)
MIN_OFFLOAD_BATCH = 32  # GGML_OP_OFFLOAD_MIN_BATCH default (ggml-cuda.cu)


@functools.lru_cache(maxsize=None)
def type_sizes() -> dict[str, tuple[int, int]]:
    """ggml type -> (elements per block, bytes per block): models/gguf.py GGML_TYPES (imported late, so
    building the CLI parser does not load the model readers)."""
    from gpu_preflight.models.gguf import GGML_TYPES

    return {name: (blk, size) for name, blk, size in GGML_TYPES.values()}


def row_bytes(type_name: str, n: int) -> int:
    blk, size = type_sizes()[type_name]
    return n // blk * size


class T:
    """One ggml tensor: op, sources, shape (ne0..ne3), type; views point at their source."""

    __slots__ = ("name", "op", "src", "ne", "type", "view_src", "flags", "dev", "contig", "backend", "weight", "nbytes",
                 "extra_gpu")

    def __init__(self, name: str, op: str, src: list, ne: tuple, type_: str = "F32", view_src: T | None = None,
                 dev: int | None = None, weight: bool = False, contig: bool = True):
        self.name, self.op, self.src, self.type = name, op, src, type_
        self.ne = tuple(ne) + (1,) * (4 - len(ne))
        self.view_src = view_src
        self.flags = 0
        self.dev = dev            # pre-allocated (weights, KV cache): index of the backend holding it
        self.weight = weight      # lives in a weights buffer (sched's GGML_BACKEND_BUFFER_USAGE_WEIGHTS)
        self.contig = contig
        self.backend = -1
        n = self.ne
        self.nbytes = row_bytes(type_, n[0]) * n[1] * n[2] * n[3]
        self.extra_gpu = 0        # bytes a CUDA buffer adds to the allocation (get_alloc_size)


@dataclass
class Graph:
    nodes: list[T] = field(default_factory=list)
    leafs: list[T] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)
    pinned: dict[int, int] = field(default_factory=dict)  # node id -> backend forced by llama.cpp's graph callback

    def expand(self, root: T) -> None:
        """ggml_build_forward_expand: depth-first, sources left to right, a node after its sources."""
        if id(root) in self.seen:
            return
        self.seen.add(id(root))
        stack: list[list[Any]] = [[root, 0]]
        while stack:
            top = stack[-1]
            node, i = top
            if i < len(node.src):
                top[1] += 1
                s = node.src[i]
                if s is not None and id(s) not in self.seen:
                    self.seen.add(id(s))
                    stack.append([s, 0])
                continue
            stack.pop()
            (self.leafs if node.op == "NONE" else self.nodes).append(node)


# ---- scheduling: ggml_backend_sched_split_graph ----

def _is_view(t: T) -> bool:
    return t.view_src is not None


def _pre_backend(t: T) -> int:
    if t.dev is not None:
        return t.dev
    if t.view_src is not None and t.view_src.dev is not None:
        return t.view_src.dev
    return -1


def _batch_size(t: T) -> int:
    if t.op == "GET_ROWS":
        return 0
    if t.op == "MUL_MAT":
        return t.ne[1]
    if t.op in ("MUL_MAT_ID", "ROPE"):
        return t.ne[2]
    return t.ne[1] * t.ne[2] * t.ne[3]


def assign_backends(g: Graph, n_gpu: int, op_offload: bool = True) -> None:
    """Backends 0..n_gpu-1 are GPUs, n_gpu is the CPU (the lowest priority, as in llama.cpp)."""
    cpu = n_gpu
    for t in g.leafs:
        t.backend = _pre_backend(t)
        if t.backend == -1 and t.flags & INPUT:
            t.backend = cpu
    for t in g.nodes:
        t.backend = g.pinned.get(id(t), -1)
        if t.backend != -1:
            continue
        b = _pre_backend(t)
        if b != -1:
            t.backend = b
            continue
        if t.flags & INPUT:
            t.backend = cpu
            continue
        if t.op in ("ROPE", "FLASH_ATTN_EXT"):
            continue
        for s in t.src:
            if s is not None and s.weight:
                wb = _pre_backend(s)
                if op_offload and wb == cpu and n_gpu and _batch_size(t) >= MIN_OFFLOAD_BATCH:
                    t.backend = 0
                else:
                    t.backend = wb
                break
    order = [t for t in g.nodes if t.op not in VIEW_OPS]
    for seq, skip_cpu in ((order, True), (order[::-1], True), (order, False), (order[::-1], False)):
        cur = -1
        for t in seq:
            if t.backend != -1:
                cur = -1 if (skip_cpu and t.backend == cpu) else t.backend
            elif cur != -1:
                t.backend = cur
    for t in g.nodes:  # pass 4: views follow their source; unassigned sources follow their consumer
        if t.view_src is not None and t.backend == -1:
            t.backend = t.view_src.backend
        for s in t.src:
            if s is not None and s.backend == -1:
                s.backend = s.view_src.backend if s.view_src is not None else t.backend
        if t.backend == -1:
            t.backend = 0 if n_gpu else cpu


def _host_readable(src: T, backend: int, cpu: int) -> bool:
    """ggml_backend_sched_buffer_supported: the CPU reads host buffers; a GPU reads only its own."""
    b = src.backend if src.backend != -1 else (src.view_src.backend if src.view_src is not None else -1)
    return b == backend or backend == cpu and b == cpu


def split_graph(g: Graph, n_gpu: int) -> list[tuple[T, int]]:
    """Pass 5 and the graph copy: (node, buffer) in allocation order, with the input copies each split
    makes of tensors held by another device, allocated at the start of the split."""
    cpu = n_gpu
    out: list[tuple[T, int]] = []
    copies: dict[tuple[int, int], T] = {}
    pending: list[T] = []   # nodes of the current split
    inputs: list[tuple[T, T]] = []  # (source, copy) made for it
    cur = -1

    def flush() -> None:
        for src, c in inputs:  # the dependency keeps the source alive until the copy is made
            dep = T(src.name + "(dep)", "NONE", [src], src.ne, src.type, view_src=src)
            out.append((dep, src.backend))
            out.append((c, cur))
        for n in pending:
            out.append((n, n.backend))
        pending.clear()
        inputs.clear()

    for t in g.nodes:
        if t.op in VIEW_OPS:
            pending.append(t)
            continue
        b = t.backend
        new = b != cur
        if not new and inputs:
            for s in t.src:
                if s is not None and s.weight and s.backend != cur and not _host_readable(s, cur, cpu):
                    new = True
                    break
        if new:
            flush()
            cur = b
        for j, s in enumerate(t.src):
            if s is None or _host_readable(s, cur, cpu):
                continue
            key = (id(s), cur)
            if key not in copies:
                c = T(f"{s.name}#{cur}", "NONE", [], s.ne, s.type)
                c.nbytes = max(s.nbytes, c.nbytes) if not s.contig else s.nbytes
                c.backend = cur
                copies[key] = c
                inputs.append((s, c))
            t.src[j] = copies[key]
        pending.append(t)
    flush()
    return out


# ---- allocation: ggml_gallocr ----

class _Dyn:
    """ggml_dyn_tallocr with one chunk: free blocks sorted by offset, best fit except the last block."""

    def __init__(self, align: int):
        self.align = align
        self.blocks: list[list[int]] = [[0, 1 << 62]]
        self.max_size = 0

    def _pad(self, n: int) -> int:
        return -(-n // self.align) * self.align

    def alloc(self, size: int) -> int:
        size = self._pad(size)
        best, best_size = -1, None
        for i in range(len(self.blocks) - 1):
            bs = self.blocks[i][1]
            if bs >= size and (best_size is None or bs <= best_size):
                best, best_size = i, bs
        if best == -1:
            best = len(self.blocks) - 1
        blk = self.blocks[best]
        addr = blk[0]
        blk[0] += size
        blk[1] -= size
        if blk[1] == 0:
            self.blocks.pop(best)
        self.max_size = max(self.max_size, addr + size)
        return addr

    def free(self, addr: int, size: int) -> None:
        size = self._pad(size)
        bl = self.blocks
        for i, blk in enumerate(bl):
            if blk[0] + blk[1] == addr:
                blk[1] += size
                if i + 1 < len(bl) and blk[0] + blk[1] == bl[i + 1][0]:
                    blk[1] += bl[i + 1][1]
                    bl.pop(i + 1)
                return
            if addr + size == blk[0]:
                blk[0] = addr
                blk[1] += size
                if i > 0 and bl[i - 1][0] + bl[i - 1][1] == blk[0]:
                    bl[i - 1][1] += blk[1]
                    bl.pop(i)
                return
        pos = 0
        while pos < len(bl) and bl[pos][0] < addr:
            pos += 1
        bl.insert(pos, [addr, size])


def allocate(order: list[tuple[T, int]], leafs: list[T], aligns: dict[int, int],
             gpu: frozenset[int] = frozenset()) -> dict[int, int]:
    """Replays ggml_gallocr_alloc_graph_impl; returns the high-water mark per buffer (backend).
    `gpu`: the buffers of CUDA devices, whose get_alloc_size can exceed ggml_nbytes."""
    allocs = {b: _Dyn(a) for b, a in aligns.items()}
    children: dict[int, int] = {}
    views: dict[int, int] = {}
    where: dict[int, tuple[int, int]] = {}   # own tensors: id -> (buffer, addr)
    size_of: dict[int, int] = {}

    def own(t: T) -> bool:
        return id(t) in where

    def allocated(t: T) -> bool:
        return t.dev is not None or own(t) or (t.view_src is not None)

    def alloc(t: T, buf: int) -> None:
        if allocated(t) or _is_view(t):
            return
        if t.op in INPLACE_OPS:
            for p in t.src:
                if p is None or not own(p) or p.flags & OUTPUT:
                    continue
                if p.ne != t.ne or p.type != t.type or not p.contig:
                    continue
                if children.get(id(p), 0) == 1 and views.get(id(p), 0) == 0:
                    where[id(t)] = where.pop(id(p))
                    size_of[id(t)] = size_of.pop(id(p))
                    return
        size = t.nbytes + (t.extra_gpu if buf in gpu else 0)
        where[id(t)] = (buf, allocs[buf].alloc(size))
        size_of[id(t)] = size

    def free(t: T) -> None:
        if t.flags & OUTPUT or not own(t):
            return
        buf, addr = where.pop(id(t))
        allocs[buf].free(addr, size_of.pop(id(t)))

    for t in leafs:
        if t.flags & INPUT:
            alloc(t, t.backend)
    for t, _ in order:
        if t.view_src is not None and t.op != "NONE":
            views[id(t.view_src)] = views.get(id(t.view_src), 0) + 1
        for s in t.src:
            if s is not None:
                children[id(s)] = children.get(id(s), 0) + 1
    for t, buf in order:
        for p in t.src:
            if p is not None and p.op == "NONE" and p.dev is None:
                alloc(p, p.backend if p.backend in allocs else buf)
        alloc(t, buf)
        for p in t.src:
            if p is None:
                continue
            children[id(p)] -= 1
            if children[id(p)] == 0 and views.get(id(p), 0) == 0:
                if p.view_src is not None:
                    v = p.view_src
                    views[id(v)] -= 1
                    if views[id(v)] == 0 and children.get(id(v), 0) == 0:
                        free(v)
                else:
                    free(p)
    return {b: a.max_size for b, a in allocs.items()}


# ---- the reservation graph of a decoder LLM (src/llama-graph.cpp, src/models/*.cpp) ----

@dataclass
class HParams:
    """What the graph shape depends on, read from a GGUF header (or a config + the quant recipe)."""

    arch: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: list[int]
    head_k: int
    head_v: int
    n_ff: list[int]
    n_vocab: int
    swa: list[bool] = field(default_factory=list)
    n_swa: int = 0
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    n_ff_shexp: int = 0
    qk_norm: bool = False
    post_norms: bool = False      # gemma2/3: attn_post_norm, ffn_post_norm
    emb_scale: bool = False       # gemma: inpL * sqrt(n_embd)
    attn_softcap: bool = False    # gemma2
    final_softcap: bool = False   # gemma2, some gemma3
    gelu: bool = False            # gemma: GEGLU instead of SwiGLU
    fused_qkv: bool = False       # phi3
    fused_up: bool = False        # phi3: ffn_up holds gate and up
    qkv_bias: bool = False
    sinks: bool = False           # gpt-oss

    def is_swa(self, il: int) -> bool:
        return bool(self.swa) and self.swa[il]


@dataclass
class Weight:
    type: str
    ne: tuple[int, ...]


@dataclass
class CParams:
    n_ubatch: int              # tokens in the reserved micro-batch (min(n_ctx, n_ubatch))
    n_outputs: int             # logits rows (= n_ubatch in the reservation)
    kv_cells: int              # cells per stream of the full-attention cache
    kv_cells_swa: int          # cells per stream of the sliding-window cache
    n_stream: int              # 1 (unified) or n_seq_max
    flash_attn: bool
    type_k: str = "F16"
    type_v: str = "F16"
    offload_kqv: bool = True
    era: int = 2026            # graph details by llama.cpp release: 2024 (ggml_cpy into the cache),
                               # 2025 (set_rows + index inputs, F32 mask cast to F16 for flash attention),
                               # 2026 (also an embeddings input; F16 mask built directly)


@dataclass
class Placement:
    n_gpu: int                 # GPU backends 0..n_gpu-1; the CPU is backend n_gpu
    dev_layer: list[int]       # backend of each layer's weights (and KV cache when offloaded)
    dev_output: int            # backend of output.weight / output_norm
    full_offload: bool


class _Builder:
    def __init__(self, hp: HParams, cp: CParams, pl: Placement, weights: dict[str, Weight]):
        self.hp, self.cp, self.pl, self.w = hp, cp, pl, weights
        self.g = Graph()
        self.cpu = pl.n_gpu
        self._leaf: dict[str, T] = {}

    def weight(self, name: str, dev: int) -> T | None:
        if name not in self.w:
            return None
        if name not in self._leaf:
            w = self.w[name]
            self._leaf[name] = T(name, "NONE", [], w.ne, w.type, dev=dev, weight=True)
        return self._leaf[name]

    def input(self, name: str, ne: tuple, type_: str = "F32") -> T:
        t = T(name, "NONE", [], ne, type_)
        t.flags |= INPUT
        return t

    def op(self, op: str, src: list, ne: tuple, type_: str = "F32", name: str = "") -> T:
        return T(name or op.lower(), op, list(src), ne, type_)

    def view(self, src: T, ne: tuple, op: str = "VIEW", contig: bool = True) -> T:
        base = src.view_src if src.view_src is not None else src
        return T(src.name + "(v)", op, [src], ne, src.type, view_src=base, contig=contig)

    def mm(self, w: T, x: T, rows: int | None = None) -> T:
        """ggml_mul_mat(w, x): [w.ne1, x.ne1, x.ne2, x.ne3] in F32."""
        return self.op("MUL_MAT", [w, x], (w.ne[1], x.ne[1], x.ne[2], x.ne[3]))

    def norm(self, x: T, w: T | None, il: int) -> T:
        cur = self.op("RMS_NORM", [x], x.ne, name="norm")
        if self.pl.full_offload or self.cp.n_ubatch < MIN_OFFLOAD_BATCH:
            if il >= 0:  # llama_context::graph_get_cb pins "norm" to its layer's device
                self.g.pinned[id(cur)] = self.pl.dev_layer[il]
        if w is not None:
            cur = self.op("MUL", [cur, w], x.ne, name="norm_w")
        return cur

    def build(self) -> Graph:
        hp, cp, g = self.hp, self.cp, self.g
        T_ = cp.n_ubatch
        tokens = self.input("inp_tokens", (T_,), "I32")
        tok = self.weight("token_embd.weight", self.cpu)
        cur = self.op("GET_ROWS", [tok, tokens], (hp.n_embd, T_), name="get_rows_embd")
        g.expand(cur)
        if cp.era >= 2026:  # build_inp_embd keeps an embeddings input next to the token path (PR #18550)
            g.expand(self.input("inp_embd", (hp.n_embd, T_)))
        if hp.emb_scale:
            cur = self.op("SCALE", [cur], cur.ne, name="inp_scaled")
        pos = self.input("inp_pos", (T_,), "I32")
        masks = {False: self._mask(cp.kv_cells, T_)}
        idx = {False: self._idxs(T_)}
        if any(hp.swa):
            masks[True] = self._mask(cp.kv_cells_swa, T_)
            idx[True] = self._idxs(T_)
        # one pair of Hadamard matrices per cache (the sliding-window cache has its own)
        self._rot = {False: self._rot_inputs()}
        if any(hp.swa):
            self._rot[True] = self._rot_inputs()
        # before mid-2025 the reservation (all tokens output) built no out_ids / get_rows (PR #14275)
        out_ids = self.input("out_ids", (cp.n_outputs,), "I32") if cp.era >= 2025 else None
        inpL = cur
        for il in range(hp.n_layer):
            inpL = self.layer(il, inpL, pos, masks[hp.is_swa(il)], idx[hp.is_swa(il)], out_ids)
        dev_out = self.pl.dev_output
        cur = self.op("RMS_NORM", [inpL], inpL.ne, name="result_norm_raw")
        cur = self.op("MUL", [cur, self.weight("output_norm.weight", dev_out)], cur.ne, name="result_norm")
        cur.flags |= OUTPUT
        out_w = self.weight("output.weight", dev_out) or self._tied_output(dev_out)
        logits = self.mm(out_w, cur)
        if hp.final_softcap:
            logits = self.op("SCALE", [logits], logits.ne)
            logits = self.op("UNARY", [logits], logits.ne)
            logits = self.op("SCALE", [logits], logits.ne)
        logits.flags |= OUTPUT
        g.expand(logits)
        return g

    def _tied_output(self, dev: int) -> T:
        w = self.w["token_embd.weight"]
        t = T("output.weight(tied)", "NONE", [], w.ne, w.type, dev=dev, weight=True)
        return t

    def _fa_f16_copies(self, att: T, k: T, v: T) -> int:
        """CUDA's flash-attention kernels for a micro-batch (MMA / tile) read K and V in F16: for a
        quantized or BF16 cache, 0c1e57098 converts them into the node's own allocation
        (ggml_cuda_flash_attn_ext_get_alloc_size / _get_f16_extra_data, ggml-cuda/fattn*.cu); earlier
        releases took that scratch from the CUDA pool instead, outside the compute buffer."""
        if self.cp.era < 2026 or self.cp.n_ubatch // self.cp.n_stream <= 2:  # 1-2 queries: the VEC kernel
            return 0
        end = att.nbytes
        for t in (k, v):
            if t.type != "F16":
                end = -(-end // 128) * 128 + t.ne[0] * t.ne[1] * t.ne[2] * t.ne[3] * 2
        return end - att.nbytes

    def _rot_inputs(self) -> tuple[T | None, T | None]:
        """The F32 Hadamard matrices a quantized cache rotates K and V with (graph inputs, so host
        buffers): K: the largest power of two >= 64 dividing the head size; V: 64 x 64
        (llama_kv_cache::build_input_k_rot / build_input_v_rot and the attn_rot_k / attn_rot_v
        conditions, src/llama-kv-cache.cpp, 0c1e57098)."""
        hp, cp = self.hp, self.cp
        k_rot = v_rot = None
        if cp.type_k not in ("F16", "F32", "BF16") and hp.head_k % 64 == 0:
            n = 64
            while hp.head_k % (n * 2) == 0:
                n *= 2
            k_rot = self.input("attn_inp_k_rot", (n, n))
        if cp.type_v not in ("F16", "F32", "BF16") and hp.head_v % 64 == 0:
            v_rot = self.input("attn_inp_v_rot", (64, 64))
        return k_rot, v_rot

    def _mask(self, cells: int, n_tokens: int) -> T:
        """The KQ mask: F16 built directly (2026); before, F32 padded to GGML_KQ_MASK_PAD rows and cast
        to F16 for flash attention (the cast is a GPU tensor that lives through the graph)."""
        cp, ns = self.cp, self.cp.n_stream
        if cp.era >= 2026:
            return self.input("kq_mask", (cells, n_tokens // ns, 1, ns), "F16" if cp.flash_attn else "F32")
        rows = _pad_to(n_tokens // ns, 64 if cp.era >= 2025 else 32)
        m = self.input("kq_mask", (cells, rows, 1, ns), "F32")
        return self.op("CPY", [m], m.ne, "F16", name="kq_mask_f16") if cp.flash_attn else m

    def _idxs(self, n_tokens: int) -> tuple[T | None, T | None]:
        if self.cp.era < 2025:  # the KV cache was written with ggml_cpy into views: no index inputs
            return None, None
        return self.input("k_idxs", (n_tokens,), "I64"), self._v_idxs(n_tokens)

    def _v_idxs(self, n_tokens: int) -> T:
        if self.cp.flash_attn:
            return self.input("v_idxs", (n_tokens,), "I64")
        return self.input("v_idxs", (n_tokens * max(self.hp.n_head_kv) * self.hp.head_v,), "I64")

    def layer(self, il: int, inpL: T, pos: T, mask: T, idx: tuple[T, T], out_ids: T) -> T:
        hp, cp, g = self.hp, self.cp, self.g
        dev = self.pl.dev_layer[il]
        T_ = cp.n_ubatch
        p = f"blk.{il}."
        cur = self.norm(inpL, self.weight(p + "attn_norm.weight", dev), il)
        nkv = hp.n_head_kv[il]
        if hp.fused_qkv:
            qkv = self.mm(self.weight(p + "attn_qkv.weight", dev), cur)
            q = self.view(qkv, (hp.head_k, hp.n_head, T_), contig=False)
            k = self.view(qkv, (hp.head_k, nkv, T_), contig=False)
            v = self.view(qkv, (hp.head_v, nkv, T_), contig=False)
        else:
            q = self.mm(self.weight(p + "attn_q.weight", dev), cur)
            if hp.qkv_bias:
                q = self.op("ADD", [q, self.weight(p + "attn_q.bias", dev)], q.ne)
            k = self.mm(self.weight(p + "attn_k.weight", dev), cur)
            if hp.qkv_bias:
                k = self.op("ADD", [k, self.weight(p + "attn_k.bias", dev)], k.ne)
            v = self.mm(self.weight(p + "attn_v.weight", dev), cur)
            if hp.qkv_bias:
                v = self.op("ADD", [v, self.weight(p + "attn_v.bias", dev)], v.ne)
            q = self.view(q, (hp.head_k, hp.n_head, T_), "RESHAPE")
            k = self.view(k, (hp.head_k, nkv, T_), "RESHAPE")
            v = self.view(v, (hp.head_v, nkv, T_), "RESHAPE")
        if hp.qk_norm:
            q = self.norm(q, self.weight(p + "attn_q_norm.weight", dev), il)
        q = self.op("ROPE", [q, pos], q.ne)
        if hp.qk_norm:
            k = self.norm(k, self.weight(p + "attn_k_norm.weight", dev), il)
        k = self.op("ROPE", [k, pos], k.ne)
        if hp.fused_qkv:
            v = self.op("CONT", [v], v.ne)
        k_rot, v_rot = self._rot[hp.is_swa(il)]
        if k_rot is not None:  # attn_rot_k: Hadamard rotation (llama_mul_mat_hadamard, src/llama-impl.h)
            q = self.op("MUL_MAT", [k_rot, q], q.ne)
            k = self.op("MUL_MAT", [k_rot, k], k.ne)
        if v_rot is not None:
            v = self.op("MUL_MAT", [v_rot, v], v.ne)
        g.expand(q)
        g.expand(v)
        g.expand(k)
        kv_dev = dev if cp.offload_kqv else self.cpu
        swa = hp.is_swa(il)
        cells = cp.kv_cells_swa if swa else cp.kv_cells
        kc = T(f"cache_k_l{il}", "NONE", [], (nkv * hp.head_k, cells, cp.n_stream), cp.type_k, dev=kv_dev)
        vc = T(f"cache_v_l{il}", "NONE", [], (nkv * hp.head_v, cells, cp.n_stream), cp.type_v, dev=kv_dev)
        g.expand(self._set_rows(kc, k, idx[0]))
        g.expand(self._set_rows(vc, v, idx[1]))
        kview = T(kc.name + "(v)", "VIEW", [kc], (hp.head_k, nkv, cells, cp.n_stream), cp.type_k, view_src=kc)
        vview = T(vc.name + "(v)", "VIEW", [vc], (hp.head_v, nkv, cells, cp.n_stream), cp.type_v, view_src=vc,
                  contig=cp.flash_attn)
        ns = cp.n_stream
        qv = self.view(q, (hp.head_k, hp.n_head, T_ // ns, ns), contig=False)
        qp = self.view(qv, (hp.head_k, T_ // ns, hp.n_head, ns), "PERMUTE", contig=False)
        kp = self.view(kview, (hp.head_k, cells, nkv, ns), "PERMUTE", contig=False)
        vp = self.view(vview, (hp.head_v, cells, nkv, ns), "PERMUTE", contig=False)
        sinks = self.weight(p + "attn_sinks.weight", dev) if hp.sinks else None
        if cp.flash_attn:
            vt = self.view(vp, vp.ne, "TRANSPOSE", contig=False) if False else vp
            att = self.op("FLASH_ATTN_EXT", [qp, kp, vt, mask, sinks], (hp.head_v, hp.n_head, T_ // ns, ns))
            att.extra_gpu = self._fa_f16_copies(att, kp, vp)
            att = self.view(att, (hp.head_v * hp.n_head, T_), "RESHAPE")
        else:
            kq = self.op("MUL_MAT", [kp, qp], (cells, T_ // ns, hp.n_head, ns), name="kq")
            if hp.attn_softcap:
                kq = self.op("SCALE", [kq], kq.ne)
                kq = self.op("UNARY", [kq], kq.ne)
                kq = self.op("SCALE", [kq], kq.ne)
            kq = self.op("SOFT_MAX", [kq, mask, sinks], kq.ne, name="kq_soft_max")
            kqv = self.op("MUL_MAT", [vp, kq], (hp.head_v, T_ // ns, hp.n_head, ns), name="kqv")
            kqv = self.view(kqv, (hp.head_v, hp.n_head, T_ // ns, ns), "PERMUTE", contig=False)
            att = self.op("CONT", [kqv], (hp.head_v * hp.n_head, T_), name="kqv_out")
        g.expand(att)
        if v_rot is not None:
            att = self.op("MUL_MAT", [v_rot, att], att.ne)
        cur = self.mm(self.weight(p + "attn_output.weight", dev), att)
        if self.w.get(p + "attn_output.bias"):
            cur = self.op("ADD", [cur, self.weight(p + "attn_output.bias", dev)], cur.ne)
        if hp.post_norms:
            cur = self.norm(cur, self.weight(p + "post_attention_norm.weight", dev), il)
        inpSA = inpL
        if il == hp.n_layer - 1 and out_ids is not None:
            cur = self.op("GET_ROWS", [cur, out_ids], (cur.ne[0], self.cp.n_outputs))
            inpSA = self.op("GET_ROWS", [inpSA, out_ids], (inpSA.ne[0], self.cp.n_outputs))
        ffn_inp = self.op("ADD", [cur, inpSA], cur.ne, name="ffn_inp")
        cur = self.norm(ffn_inp, self.weight(p + "ffn_norm.weight", dev), il)
        cur = self.moe(il, cur, dev) if hp.n_expert and p + "ffn_gate_inp.weight" in self.w else self.ffn(il, cur, dev)
        if hp.post_norms:
            cur = self.norm(cur, self.weight(p + "post_ffw_norm.weight", dev), il)
        cur = self.op("ADD", [cur, ffn_inp], cur.ne, name="l_out")
        return cur

    def _set_rows(self, cache: T, cur: T, idxs: T | None) -> T:
        src = self.view(cur, (cur.ne[0] * cur.ne[1], cur.ne[2]), contig=cur.contig)
        if idxs is None:  # ggml_cpy(cur, view of the cache): the result is a view of the cache
            return T(cache.name + "(cpy)", "CPY", [src, cache], cache.ne, cache.type, view_src=cache)
        return T(cache.name + "(set)", "SET_ROWS", [cache, src, idxs], cache.ne, cache.type, view_src=cache)

    def ffn(self, il: int, cur: T, dev: int) -> T:
        hp, T_ = self.hp, cur.ne[1]
        p = f"blk.{il}."
        n_ff = hp.n_ff[il]
        if hp.fused_up:
            up = self.mm(self.weight(p + "ffn_up.weight", dev), cur)
            act = self.op("GLU", [up], (n_ff, T_))
        else:
            up = self.mm(self.weight(p + "ffn_up.weight", dev), cur)
            gate = self.mm(self.weight(p + "ffn_gate.weight", dev), cur)
            act = self.op("GLU", [gate, up], (n_ff, T_), name="ffn_glu")
        return self.mm(self.weight(p + "ffn_down.weight", dev), act)

    def moe(self, il: int, cur: T, dev: int) -> T:
        hp, T_ = self.hp, cur.ne[1]
        p = f"blk.{il}."
        E, K, F = hp.n_expert, hp.n_expert_used, hp.n_ff_exp
        logits = self.mm(self.weight(p + "ffn_gate_inp.weight", dev), cur)
        probs = self.op("SOFT_MAX", [logits], logits.ne)
        sel = self.op("ARGSORT", [probs], (E, T_), "I32")
        sel = self.view(sel, (K, T_), contig=False)
        probs3 = self.view(probs, (1, E, T_), "RESHAPE")
        wts = self.op("GET_ROWS", [probs3, sel], (1, K, T_))
        wts2 = self.view(wts, (K, T_), "RESHAPE")
        wsum = self.op("SUM_ROWS", [wts2], (1, T_))
        wts2 = self.op("DIV", [wts2, wsum], wts2.ne)
        wts = self.view(wts2, (1, K, T_), "RESHAPE")
        self.g.expand(wts)
        x = self.view(cur, (hp.n_embd, 1, T_), "RESHAPE")
        up = self.op("MUL_MAT_ID", [self.weight(p + "ffn_up_exps.weight", dev), x, sel], (F, K, T_))
        gate = self.op("MUL_MAT_ID", [self.weight(p + "ffn_gate_exps.weight", dev), x, sel], (F, K, T_))
        act = self.op("GLU", [gate, up], (F, K, T_))
        down = self.op("MUL_MAT_ID", [self.weight(p + "ffn_down_exps.weight", dev), act, sel], (hp.n_embd, K, T_))
        down = self.op("MUL", [down, wts], down.ne)
        self.g.expand(down)
        parts = [self.view(down, (hp.n_embd, T_), contig=False) for _ in range(K)]
        for v in parts:
            self.g.expand(v)
        out = parts[0]
        for v in parts[1:]:
            out = self.op("ADD", [out, v], (hp.n_embd, T_))
            self.g.expand(out)
        if p + "ffn_up_shexp.weight" in self.w:
            su = self.mm(self.weight(p + "ffn_up_shexp.weight", dev), cur)
            sg = self.mm(self.weight(p + "ffn_gate_shexp.weight", dev), cur)
            sa = self.op("GLU", [sg, su], su.ne)
            sd = self.mm(self.weight(p + "ffn_down_shexp.weight", dev), sa)
            out = self.op("ADD", [out, sd], out.ne)
        return out


def _pad_to(n: int, p: int) -> int:
    return -(-n // p) * p


def compute_buffers(hp: HParams, cp: CParams, pl: Placement, weights: dict[str, Weight]) -> dict[int, int]:
    """Bytes of each backend's compute buffer: {0..n_gpu-1: GPU, n_gpu: host (CUDA_Host or CPU)}."""
    g = _Builder(hp, cp, pl, weights).build()
    assign_backends(g, pl.n_gpu)
    order = split_graph(g, pl.n_gpu)
    aligns = {b: CUDA_ALIGN for b in range(pl.n_gpu)}
    aligns[pl.n_gpu] = HOST_ALIGN
    return allocate(order, g.leafs, aligns, frozenset(range(pl.n_gpu)))
