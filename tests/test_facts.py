"""The fact tables: every row cites a source, and the tables cover what the issues require."""

import json
import os
import re

import pytest

from gpu_preflight.compatibility import facts
from gpu_preflight.errors import UsageError

DATA = facts.DATA_DIR
URL = re.compile(r"^https://\S+$")


def rows(name):
    data = json.load(open(os.path.join(DATA, f"{name}.json")))
    if name == "cuda":
        for key in ("toolkits", "families", "sm_targets", "forward_compat", "error_codes"):
            for r in data[key]:
                yield f"{key}:{r.get('cuda') or r.get('major') or r.get('package') or r.get('code')}", r
    elif name == "torch":
        for rel in data["releases"]:
            yield f"torch {rel['torch']}", rel
            for v in rel["variants"]:
                yield f"torch {rel['torch']} {v['variant']}", v
    else:
        for g in data["gpus"]:
            yield g["id"], g


@pytest.mark.parametrize("table", ["cuda", "torch", "gpus"])
def test_every_row_has_a_source_url(table):
    missing = [key for key, r in rows(table) if not URL.match(str(r.get("source", "")))]
    assert missing == []


def test_cuda_toolkits_span_11_0_to_13():
    versions = {facts.parse_cuda(r["cuda"]) for r in facts.table("cuda")["toolkits"]}
    assert (11, 0) in versions and (12, 8) in versions and (13, 0) in versions
    assert {(11, m) for m in range(0, 9)} <= versions


def test_torch_releases_span_2_0_to_newest():
    got = {r["torch"] for r in facts.table("torch")["releases"]}
    assert {f"2.{m}" for m in range(0, 16)} <= got


def test_gpu_catalog_size_and_unique_names():
    gpus = facts.gpus()
    assert len(gpus) >= 60
    segments = {g["segment"] for g in gpus}
    assert {"datacenter", "workstation", "consumer", "jetson"} <= segments
    seen = {}
    for g in gpus:
        for key in [g["id"], *g.get("aliases", []), *g.get("nvml_names", [])]:
            norm = facts._norm(key)
            assert seen.setdefault(norm, g["id"]) == g["id"], f"{key} maps to {seen[norm]} and {g['id']}"


# Values below are read from NVIDIA's CUDA release notes Table 3 and the compatibility guide.
def test_family_floors():
    assert facts.cuda_family(12)["linux_floor"] == "525.60.13"
    assert facts.cuda_family(13)["linux_floor"] == "580.00"  # ">= 580": a branch (minor-version page, Table 1)
    assert facts.cuda_family(11)["linux_floor"] == "450.80.02"


@pytest.mark.parametrize("cuda,driver", [("12.1", "530.30.02"), ("12.2", "535.54.03"), ("12.8", "570.26"),
                                         ("11.8", "520.61.05"), ("13.0", "580.65.06")])
def test_toolkit_ga_drivers(cuda, driver):
    assert facts.toolkit_driver(cuda)[0] == driver


@pytest.mark.parametrize("driver,cuda", [("535.54.03", "12.2"), ("570.124.06", "12.8"), ("580.159.04", "13.0"),
                                         ("525.60.13", "12.0"), ("470.82.01", "11.4")])
def test_driver_max_cuda(driver, cuda):
    assert facts.driver_max_cuda(driver) == cuda


@pytest.mark.parametrize("bad", ["535", "abc", "535.54.03.1", "", "5350.1.2.3", "-535.1"])
def test_garbage_driver_strings_are_usage_errors(bad):
    with pytest.raises(UsageError):
        facts.parse_driver(bad)


@pytest.mark.parametrize("name", ["4090", "rtx4090", "RTX 4090", "NVIDIA GeForce RTX 4090", "rtx-4090"])
def test_loose_gpu_names(name):
    assert facts.find_gpu(name)["id"] == facts.find_gpu("NVIDIA GeForce RTX 4090")["id"]
    assert facts.find_gpu(name)["compute_capability"] == "8.9"


def test_unknown_gpu_suggests_near_names():
    with pytest.raises(UsageError) as exc:
        facts.find_gpu("rtx 4099")
    assert "4090" in (exc.value.hint or "")


@pytest.mark.parametrize("text,expected", [("2.7.1+cu128", ("2.7.1", "cu128")), ("2.7.1", ("2.7.1", None)),
                                           ("2.6.0a0+git1234", ("2.6.0", None)), ("2.5.1+cpu", ("2.5.1", "cpu"))])
def test_parse_torch(text, expected):
    assert facts.parse_torch(text) == expected


@pytest.mark.parametrize("bad", ["2.5.1+rocm6.2", "torch", "latest", "2"])
def test_parse_torch_rejects(bad):
    with pytest.raises(UsageError):
        facts.parse_torch(bad)


# ---------------------------------------------------------------- issue 11 / 17 / 9

def test_every_gpu_name_in_the_sources_resolves():
    data = json.load(open(os.path.join(os.path.dirname(__file__), "fixtures", "gpu_names_from_sources.json")))
    missing = [n for names in data["sources"].values() for n in names if facts.match_gpu(n) is None]
    assert missing == []


def test_every_desktop_gpu_has_a_minimum_driver():
    # Jetson Orin's driver is part of Jetson Linux: the only CC without a desktop branch
    missing = [g["id"] for g in facts.gpus() if facts.gpu_min_driver(g)[0] is None and g["compute_capability"] != "8.7"]
    assert missing == []
    assert facts.gpu_min_driver(facts.find_gpu("h100"))[0] == "520.00"   # CUDA 11.8 (R520) first targets sm_90
    assert facts.gpu_min_driver(facts.find_gpu("rtx 5090"))[0] == "570.26"


def test_ambiguous_names_pick_the_smaller_board_and_say_so():
    row, note = facts.resolve_gpu("A100")
    assert row["memory_gb"] == 40 and "assuming the smaller" in note and "80GB" in note
    assert facts.find_gpu("v100")["memory_gb"] == 16
    assert facts.resolve_gpu("rtx 4090")[1] is None


def test_nvml_sizes_and_shared_memory():
    assert facts.find_gpu("NVIDIA H100 80GB HBM3")["memory_mib"] == 81559
    assert facts.find_gpu("NVIDIA H200")["memory_mib"] == 143771
    assert facts.shares_memory_with_cpu(facts.find_gpu("orin")) and facts.shares_memory_with_cpu(facts.find_gpu("dgx spark"))
    assert facts.find_gpu("rtx 5050")["memory_size_kind"] == "marketed"


@pytest.mark.parametrize("text,expected", [("580", "580.95.05"), ("535", "535.104.05"), ("570.86.16", "570.86.16")])
def test_driver_branch_is_the_newest_release_in_the_tables(text, expected):
    assert facts.resolve_driver(text) == expected


def test_jetson_versions_parse():
    assert facts.parse_torch("2.5.0a0+872d972e41.nv24.08") == ("2.5.0", "nv24.08")
    assert facts.parse_torch("2.0.0+nv23.05") == ("2.0.0", "nv23.05")
    assert facts.jetpack_for_l4t("R36.4.3")["jetpack"] == "6.2" and facts.jetpack_for_l4t("35.4.1")["cuda"] == "11.4"


def test_variant_rows_say_how_they_were_verified_and_new_variants_exist():
    for rel in facts.table("torch")["releases"]:
        assert rel.get("wheels", {}).get("source", "").startswith("https://pypi.org/project/torch/")
        for v in rel["variants"]:
            assert v.get("verified"), (rel["torch"], v["variant"])
    for ver in ("2.9", "2.10", "2.11", "2.12"):
        assert facts.torch_variant(ver, "cu129")[1] is not None
    assert facts.torch_variant("2.15", "cu130")[1]["cuda"] == "13.0"


@pytest.mark.parametrize("name", ["jetson", "extensions"])
def test_new_tables_cite_sources(name):
    data = facts.table(name)
    rows = data.get("jetpacks", []) + data.get("rules", []) + data.get("packages", [])
    assert rows and all(URL.match(r["source"]) for r in rows)
    for jp in data.get("jetpacks", []):
        assert all(URL.match(w["source"]) for w in jp["torch_wheels"])
