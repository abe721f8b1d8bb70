"""Link speeds an all-reduce inside a node is judged against (used by `preflight fleet --deep`).

NVLink from NVIDIA's product pages: the total NVLink bandwidth per GPU counts both directions,
so one direction is half. PCIe from the link generation and width NVML reports: per lane and
direction 0.985 GB/s Gen3, 1.969 Gen4, 3.938 Gen5, 7.563 Gen6, after 128b/130b (Gen6: FLIT)
encoding (PCI-SIG). An all-reduce reaching under SLOW_FRACTION of it is reported as slow.
"""

from __future__ import annotations

NVLINK_TOTAL_GB_S = {  # per GPU, both directions
    "H100 SXM": (900, "https://www.nvidia.com/en-us/data-center/h100/"),
    "H200": (900, "https://www.nvidia.com/en-us/data-center/h200/"),
    "GH200": (900, "https://www.nvidia.com/en-us/data-center/grace-hopper-superchip/"),
    "A100 SXM": (600, "https://www.nvidia.com/en-us/data-center/a100/"),
    "B200": (1800, "https://www.nvidia.com/en-us/data-center/dgx-b200/"),
}
PCIE_LANE_GB_S = {3: 0.985, 4: 1.969, 5: 3.938, 6: 7.563}  # per direction, after encoding
SLOW_FRACTION = 0.5


def expected_link_gb_s(gpu_name: str | None, nvlink_active: int, pcie_gen: int | None,
                       pcie_width: int | None) -> tuple[float | None, str]:
    """(per-direction GB/s, what it is) for the link an intra-node all-reduce should run at."""
    name = (gpu_name or "").upper()
    if nvlink_active:
        for key, (total, url) in NVLINK_TOTAL_GB_S.items():
            parts = key.upper().split()
            if all(p in name for p in parts):
                return total / 2, f"NVLink, {total} GB/s per GPU both directions ({url})"
    if pcie_gen in PCIE_LANE_GB_S and pcie_width:
        return PCIE_LANE_GB_S[pcie_gen] * pcie_width, f"PCIe Gen{pcie_gen} x{pcie_width}"
    return None, "link speed unknown"
