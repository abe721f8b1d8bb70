"""Hub repos through huggingface_hub against a fake Hub on 127.0.0.1 (no real network).

The fake speaks the few endpoints huggingface_hub uses here: GET /api/models/{repo}[/revision/{rev}]
(model info: sha, siblings), HEAD/GET /{repo}/resolve/{rev}/{file} with X-Repo-Commit, ETag and
Content-Length, Range requests (206) for safetensors headers, and the X-Error-Code headers
(RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo) that huggingface_hub maps to its errors.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

huggingface_hub = pytest.importorskip("huggingface_hub")

from models_helpers import (  # noqa: E402
    llama_config,
    llama_tensors,
    raw_safetensors,
    safetensors_bytes,
    tensors_bytes,
    write_hf_cache,
)

from gpu_preflight.errors import ModelSourceError  # noqa: E402
from gpu_preflight.models import load_catalog, load_model_source  # noqa: E402
from gpu_preflight.models.hub import HubUnreachable  # noqa: E402

if getattr(pytest.importorskip("huggingface_hub.constants"), "HF_HUB_OFFLINE", False):
    pytest.skip("HF_HUB_OFFLINE is set for this process", allow_module_level=True)

COMMIT = "a" * 40
COMMIT_V1 = "b" * 40
GOOD_TOKEN = "hf_good_token"


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}
        self.requests: list[dict] = []
        self.endpoint = ""
        self.fail_model_info_with: int | None = None

    def add(self, repo_id, files, *, refs=None, gated=False, siblings=True):
        self.repos[repo_id] = {
            "files": {name: (content if isinstance(content, bytes) else json.dumps(content).encode())
                      for name, content in files.items()},
            "refs": refs or {"main": COMMIT},
            "gated": gated,
            "siblings": siblings,
        }

    def requested(self, method=None, suffix=""):
        return [r for r in self.requests if (method is None or r["method"] == method) and r["path"].endswith(suffix)]


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 5

        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_HEAD(self):
            self._serve(body=False)

        def do_GET(self):
            self._serve(body=True)

        def _serve(self, body: bool):
            path = self.path.split("?", 1)[0]
            hub.requests.append({"method": self.command, "path": unquote(path),
                                 "range": self.headers.get("Range"), "auth": self.headers.get("Authorization")})
            parts = path.lstrip("/").split("/")
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                return self._model_info(parts[2:], body)
            if len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve(parts, body)
            return self._send(404, b"{}", body)

        def _repo(self, org, name):
            repo = hub.repos.get(f"{org}/{name}")
            if repo is None:
                self._send(401, b'{"error":"Repository not found"}', True,
                           {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
            return repo

        def _commit(self, repo, revision):
            revision = unquote(revision)
            if revision in repo["refs"]:
                return repo["refs"][revision]
            if revision in repo["refs"].values():
                return revision
            self._send(404, b'{"error":"Invalid rev id"}', True,
                       {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"})
            return None

        def _model_info(self, rest, body):
            if hub.fail_model_info_with:
                return self._send(hub.fail_model_info_with, b"{}", body)
            repo = self._repo(rest[0], rest[1])
            if repo is None:
                return
            commit = self._commit(repo, rest[3] if len(rest) >= 4 and rest[2] == "revision" else "main")
            if commit is None:
                return
            info = {"id": f"{rest[0]}/{rest[1]}", "modelId": f"{rest[0]}/{rest[1]}", "sha": commit,
                    "private": False, "gated": "auto" if repo["gated"] else False, "tags": [],
                    "downloads": 0, "likes": 0}
            if repo["siblings"]:
                info["siblings"] = [{"rfilename": name} for name in sorted(repo["files"])]
            self._send(200, json.dumps(info).encode(), body, {"Content-Type": "application/json"})

        def _resolve(self, parts, body):
            repo = self._repo(parts[0], parts[1])
            if repo is None:
                return
            commit = self._commit(repo, parts[3])
            if commit is None:
                return
            if repo["gated"] and self.headers.get("Authorization") != f"Bearer {GOOD_TOKEN}":
                return self._send(403, b'{"error":"gated"}', True, {
                    "X-Error-Code": "GatedRepo",
                    "X-Error-Message": "Access to model is restricted. You must have access to it.",
                })
            filename = unquote("/".join(parts[4:]))
            content = repo["files"].get(filename)
            if content is None:
                return self._send(404, b'{"error":"Entry not found"}', True,
                                  {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit})
            headers = {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(content).hexdigest()}"',
                       "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
            if match and self.command == "GET":
                start = int(match[1])
                end = min(int(match[2]) if match[2] else len(content) - 1, len(content) - 1)
                headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
                return self._send(206, content[start : end + 1], body, headers)
            return self._send(200, content, body, headers)

        def _send(self, status, content, body, headers=None):
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            if body and self.command != "HEAD":
                self.wfile.write(content)

    return Handler


@pytest.fixture
def fake_hub():
    hub = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    hub.endpoint = f"http://127.0.0.1:{server.server_port}"
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def env(fake_hub, tmp_path):
    return {"HF_ENDPOINT": fake_hub.endpoint, "HF_HUB_CACHE": str(tmp_path / "hf-cache")}


def _load(spec, env, tmp_path=None, **kwargs):
    kwargs.setdefault("catalog", load_catalog(Path(env["HF_HUB_CACHE"]).parent / "no-catalog"))
    return load_model_source(spec, env=env, **kwargs)


def _assert_no_full_weight_download(fake_hub):
    for request in fake_hub.requested("GET", ".safetensors"):
        assert request["range"], f"full download of {request['path']}"


def test_single_file_repo_reads_config_and_headers_by_range(fake_hub, env):
    fake_hub.add("org/tiny", {"config.json": llama_config(), "model.safetensors": safetensors_bytes(llama_tensors()),
                              "README.md": b"# tiny"})
    source = _load("org/tiny", env)
    assert source.origin == "hub" and source.name == "org/tiny" and source.revision == COMMIT
    assert source.source_url == f"{fake_hub.endpoint}/org/tiny/tree/{COMMIT}"
    assert source.config["hidden_size"] == 64
    assert source.weights_bytes == tensors_bytes(llama_tensors())
    assert source.warnings == []
    _assert_no_full_weight_download(fake_hub)
    assert not fake_hub.requested(suffix="README.md")
    cache = Path(env["HF_HUB_CACHE"]) / "models--org--tiny"
    assert (cache / "refs" / "main").read_text() == COMMIT  # config.json went to the normal HF cache
    assert (cache / "snapshots" / COMMIT / "config.json").is_file()


def test_sharded_repo_with_a_large_header_needs_a_second_range(fake_hub, env):
    big = {f"model.layers.{i}.block.weight_with_a_long_name_{j}": ("F16", (4, 4)) for i in range(40) for j in range(40)}
    shards = {
        "model-00001-of-00002.safetensors": dict(list(big.items())[:1200]),
        "model-00002-of-00002.safetensors": dict(list(big.items())[1200:]),
    }
    files = {"config.json": llama_config(),
             "model.safetensors.index.json": {"metadata": {"total_size": tensors_bytes(big)},
                                              "weight_map": {n: f for f, part in shards.items() for n in part}}}
    files.update({f: safetensors_bytes(part) for f, part in shards.items()})
    assert len(files["model-00001-of-00002.safetensors"]) > 100_000
    fake_hub.add("org/sharded", files)
    source = _load("org/sharded", env)
    assert len(source.tensors) == 1600 and source.weights_bytes == tensors_bytes(big)
    assert source.warnings == []
    ranges = [r["range"] for r in fake_hub.requested("GET", "model-00001-of-00002.safetensors")]
    assert ranges[0] == "bytes=0-100000" and len(ranges) == 2
    _assert_no_full_weight_download(fake_hub)


def test_revision_in_the_spec_and_unknown_revisions(fake_hub, env):
    fake_hub.add("org/tiny", {"config.json": llama_config(hidden_size=32)}, refs={"main": COMMIT, "v1": COMMIT_V1})
    source = _load("org/tiny@v1", env)
    assert source.revision == COMMIT_V1 and source.config["hidden_size"] == 32
    assert any("no .safetensors weights" in w for w in source.warnings)
    with pytest.raises(ModelSourceError, match="revision 'v9' was not found") as info:
        _load("org/tiny", env, revision="v9")
    assert "org/tiny@main" in info.value.hint


def test_gated_repo_needs_a_token(fake_hub, env):
    fake_hub.add("org/gated", {"config.json": llama_config(), "model.safetensors": safetensors_bytes(llama_tensors())},
                 gated=True)
    with pytest.raises(ModelSourceError, match="gated") as info:
        _load("org/gated", env)
    assert f"{fake_hub.endpoint}/org/gated" in info.value.hint and "HF_TOKEN" in info.value.hint
    source = _load("org/gated", {**env, "HF_TOKEN": GOOD_TOKEN})
    assert source.weights_bytes == tensors_bytes(llama_tensors())
    assert fake_hub.requested("GET", ".safetensors")[-1]["auth"] == f"Bearer {GOOD_TOKEN}"


def test_unknown_repo(fake_hub, env):
    with pytest.raises(ModelSourceError, match="org/nope was not found") as info:
        _load("org/nope", env)
    assert "HF_TOKEN" in info.value.hint


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_endpoint_is_quick_and_clear(tmp_path):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    env = {"HF_ENDPOINT": endpoint, "HF_HUB_CACHE": str(tmp_path / "c")}
    start = time.perf_counter()
    with pytest.raises(HubUnreachable, match=f"cannot reach {endpoint}") as info:
        _load("org/tiny", env)
    assert time.perf_counter() - start < 30
    assert "pass a local folder or catalog name" in info.value.hint


def test_hub_errors_fall_back_to_the_catalog_entry(fake_hub, env, tmp_path):
    folder = tmp_path / "catalog"
    folder.mkdir()
    (folder / "tiny.json").write_text(json.dumps({"id": "tiny", "hf_repo": "org/tiny", "config": llama_config()}))
    fake_hub.fail_model_info_with = 503
    source = _load("org/tiny", env, catalog=load_catalog(folder))
    assert source.origin == "catalog" and "HTTP 503" in source.warnings[0]


def test_pipeline_repo_has_components(fake_hub, env):
    unet = {"conv_in.weight": ("F16", (320, 4, 3, 3))}
    text = {"emb": ("F32", (10, 4)), "proj": ("F32", (4, 4))}
    fake_hub.add("org/sd", {
        "model_index.json": {"_class_name": "StableDiffusionPipeline",
                             "unet": ["diffusers", "UNet2DConditionModel"],
                             "text_encoder": ["transformers", "CLIPTextModel"],
                             "scheduler": ["diffusers", "PNDMScheduler"],
                             "tokenizer": ["transformers", "CLIPTokenizer"]},
        "unet/config.json": {"_class_name": "UNet2DConditionModel"},
        "unet/diffusion_pytorch_model.safetensors": safetensors_bytes(unet),
        "unet/diffusion_pytorch_model.fp16.safetensors": safetensors_bytes(unet),
        "text_encoder/config.json": {"model_type": "clip_text_model"},
        "text_encoder/model.safetensors.index.json": {"weight_map": {"emb": "model-00001-of-00002.safetensors",
                                                                     "proj": "model-00002-of-00002.safetensors"}},
        "text_encoder/model-00001-of-00002.safetensors": safetensors_bytes({"emb": text["emb"]}),
        "text_encoder/model-00002-of-00002.safetensors": safetensors_bytes({"proj": text["proj"]}),
        "scheduler/scheduler_config.json": {},
        "tokenizer/vocab.json": {},
    })
    source = _load("org/sd", env)
    assert source.kind == "diffusion" and source.origin == "hub"
    assert set(source.components) == {"unet", "text_encoder"}
    assert source.components["unet"].origin == "hub"
    assert source.weights_bytes == tensors_bytes(unet) + tensors_bytes(text)
    assert not fake_hub.requested(suffix="fp16.safetensors")
    _assert_no_full_weight_download(fake_hub)


def test_remote_code_is_never_downloaded(fake_hub, env):
    config = llama_config(auto_map={"AutoModelForCausalLM": "modeling_x.XModel"})
    fake_hub.add("org/custom", {"config.json": config, "modeling_x.py": b"raise SystemExit('ran')",
                                "model.safetensors": safetensors_bytes(llama_tensors())})
    source = _load("org/custom", env)
    assert any("auto_map" in w for w in source.warnings)
    assert not fake_hub.requested(suffix=".py")


def test_pickle_only_and_gguf_only_repos(fake_hub, env):
    fake_hub.add("org/old", {"config.json": llama_config(), "pytorch_model.bin": b"pickle"})
    source = _load("org/old", env)
    assert source.tensors is None and "PyTorch pickle" in source.warnings[0]
    assert not fake_hub.requested(suffix=".bin")
    fake_hub.add("org/quants", {"model-Q4_K_M.gguf": b"GGUF", "README.md": b""})
    with pytest.raises(ModelSourceError, match="no config.json") as info:
        _load("org/quants", env)
    assert "model-Q4_K_M.gguf" in info.value.hint


def test_shard_missing_from_the_repo_falls_back_to_config(fake_hub, env):
    fake_hub.add("org/partial", {
        "config.json": llama_config(),
        "model.safetensors.index.json": {"weight_map": {"a": "model-00001-of-00002.safetensors",
                                                        "b": "model-00002-of-00002.safetensors"}},
        "model-00001-of-00002.safetensors": safetensors_bytes({"a": ("F16", (2,))}),
    })
    source = _load("org/partial", env)
    assert source.tensors is None and "1 of 2 weight files are missing" in source.warnings[0]


def test_corrupt_remote_header_names_the_file(fake_hub, env):
    bad = raw_safetensors({"w": {"dtype": "F16", "shape": [4], "data_offsets": [0, 6]}}, 6)
    fake_hub.add("org/bad", {"config.json": llama_config(), "model.safetensors": bad})
    with pytest.raises(ModelSourceError, match="org/bad/model.safetensors"):
        _load("org/bad", env)


def test_without_siblings_the_files_are_probed(fake_hub, env):
    fake_hub.add("org/bare", {"config.json": llama_config(), "model.safetensors": safetensors_bytes(llama_tensors())},
                 siblings=False)
    source = _load("org/bare", env)
    assert source.weights_bytes == tensors_bytes(llama_tensors())


def test_second_run_offline_uses_the_cache(fake_hub, env):
    fake_hub.add("org/tiny", {"config.json": llama_config(), "model.safetensors": safetensors_bytes(llama_tensors())})
    _load("org/tiny", env)
    count = len(fake_hub.requests)
    source = _load("org/tiny", env, offline=True)
    assert len(fake_hub.requests) == count  # nothing asked of the Hub
    assert source.origin == "hub-cache" and source.tensors is None  # weights were never downloaded
    assert source.config["hidden_size"] == 64


def test_complete_cache_needs_no_request(fake_hub, env):
    write_hf_cache(Path(env["HF_HUB_CACHE"]), "org/cached", COMMIT, {
        "config.json": json.dumps(llama_config()).encode(),
        "model.safetensors": safetensors_bytes(llama_tensors()),
    })
    source = _load("org/cached", env)
    assert source.origin == "hub-cache" and fake_hub.requests == []


def test_incomplete_cache_is_completed_from_the_hub(fake_hub, env):
    write_hf_cache(Path(env["HF_HUB_CACHE"]), "org/tiny", COMMIT, {"config.json": json.dumps(llama_config()).encode()})
    fake_hub.add("org/tiny", {"config.json": llama_config(), "model.safetensors": safetensors_bytes(llama_tensors())})
    source = _load("org/tiny", env)
    assert source.origin == "hub" and source.weights_bytes == tensors_bytes(llama_tensors())
