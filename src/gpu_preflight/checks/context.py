"""Derived views of a snapshot that several checks share (pure, no probing)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from gpu_preflight.compatibility import facts
from gpu_preflight.snapshots.schema import fact, gpus

GIB = 1 << 30


@dataclass
class TorchView:
    installed: bool
    version: str | None = None       # base version '2.7.1'
    local: str | None = None         # 'cu128', 'cpu', None
    cuda: str | None = None          # '12.8', None for CPU builds
    variant: str | None = None       # 'cu128' / 'cpu' (PyPI default resolved)
    sass: list[str] | None = None    # compute capabilities with cubins, e.g. ['8.0', '9.0', '9.0a']
    ptx: list[str] | None = None
    arch_source: str | None = None   # 'torch.cuda.get_arch_list()' or a facts-table URL
    arch_note: str | None = None
    release: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def variant_cuda(variant: str | None) -> str | None:
    m = re.fullmatch(r"cu(\d+)(\d)", variant or "")
    return f"{m.group(1)}.{m.group(2)}" if m else None


def arch_from_list(arch_list: list[str]) -> tuple[list[str], list[str]]:
    """torch.cuda.get_arch_list() entries ('sm_90', 'sm_90a', 'compute_120') -> (sass, ptx)."""
    sass, ptx = [], []
    for item in arch_list:
        m = re.fullmatch(r"(sm|compute)_(\d+?)(\d)([af]?)", item)
        if not m:
            continue
        cc = f"{m.group(2)}.{m.group(3)}{m.group(4)}"
        (sass if m.group(1) == "sm" else ptx).append(cc)
    return sass, ptx


def platform_of(snap: dict) -> str:
    """linux-x86_64 | linux-aarch64 | jetson | windows | wsl (from the platform probe or the description)."""
    kind = fact(snap, "platform.kind").get()
    if kind:
        return kind
    machine = (fact(snap, "host.machine").get() or "").lower()
    return "linux-aarch64" if machine in ("aarch64", "arm64") else "linux-x86_64"


def jetpack_of(snap: dict) -> dict | None:
    jp = fact(snap, "platform.jetpack").get()
    if jp:
        return facts.jetpack(jp)
    return facts.jetpack_for_l4t(fact(snap, "platform.l4t").get())


def torch_view(snap: dict) -> TorchView:
    inst = fact(snap, "torch.installed")
    if not inst.get(False):
        return TorchView(installed=False)
    raw = fact(snap, "torch.version").get()
    try:
        base, local = facts.parse_torch(raw)
    except Exception:  # noqa: BLE001 - odd local builds: judge what we can
        base, local = str(raw).split("+")[0], None
    view = TorchView(installed=True, version=base, local=local)
    cuda_fact = fact(snap, "torch.cuda")
    view.release, var_row = facts.torch_variant(base, local if local and local != "cpu" else None) \
        if facts.torch_release(base) else (None, None)
    if local and facts.is_jetson_local(local) and not cuda_fact.ok:
        jp = jetpack_of(snap)
        view.cuda = jp["cuda"] if jp else None
        view.notes.append("NVIDIA Jetson wheel: CUDA of its JetPack")
    elif cuda_fact.ok:
        view.cuda = cuda_fact.value
    elif local and local.startswith("cu"):
        view.cuda = variant_cuda(local)
    elif local == "cpu":
        view.cuda = None
    elif var_row is not None:
        view.cuda = var_row.get("cuda")
        view.notes.append(f"CUDA version taken from the default wheel of torch {base} ({var_row['variant']})")
    if local == "cpu" or (cuda_fact.ok and cuda_fact.value is None):
        view.variant = "cpu"
    elif local and local.startswith("cu"):
        view.variant = local
    elif local and facts.is_jetson_local(local):
        view.variant = local
        var_row = None
    elif view.cuda:
        view.variant = "cu" + view.cuda.replace(".", "")
    if view.release is not None and view.variant and (var_row is None or var_row["variant"] != view.variant):
        var_row = next((v for v in view.release.get("variants", []) if v["variant"] == view.variant), None)

    deep = fact(snap, "torch_deep.result")
    arch = (deep.value or {}).get("arch_list", {}).get("value") if deep.ok else None
    if arch:
        view.sass, view.ptx = arch_from_list(arch)
        view.arch_source = "torch.cuda.get_arch_list() (--deep)"
    elif var_row is not None:
        plat = platform_of(snap)
        view.sass, view.ptx, view.arch_source = facts.variant_arch(var_row, plat)
        view.arch_note = var_row.get("note") if facts.wheel_platform(plat) == "linux-x86_64" else \
            f"no verified {facts.wheel_platform(plat)} arch list for {var_row['variant']}"
    return view


@dataclass
class GpuView:
    index: int
    name: str | None
    cc: str | None
    memory_total_bytes: int | None
    catalog: dict[str, Any] | None
    raw: dict[str, Any]


def gpu_views(snap: dict) -> list[GpuView]:
    out = []
    for g in gpus(snap):
        if "error" in g:
            continue
        name = g.get("name").get() if g.get("name") else None
        cat = facts.match_gpu(name) if name else None
        cc_fact = g.get("compute_capability")
        cc = cc_fact.get() if cc_fact is not None else None
        if cc is None and cat is not None:
            cc = cat["compute_capability"]
        mem = g.get("memory_total_bytes")
        out.append(GpuView(int(g["index"].get(0)), name, cc, mem.get() if mem else None, cat, g))
    return out


def driver_version(snap: dict) -> str | None:
    return fact(snap, "nvml.driver_version").get()


def gib(n: float | int | None) -> str:
    return "?" if n is None else f"{n / GIB:.1f} GiB"
