"""The fact tables: every row cites a source, and the tables cover what the issues require."""

import json
import os
import re

import pytest

from gpu_preflight.compat import facts
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
