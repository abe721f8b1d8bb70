"""A GGUF on the Hugging Face Hub, read header only, through HTTP range requests.

`org/name/path/file.gguf[@revision]` (or a https://.../resolve/<rev>/<path>.gguf URL) is fetched as
`{HF_ENDPOINT}/org/name/resolve/<rev>/<path>` in ranges that grow (1 MiB, 2 MiB, ...) until the
tensor infos are parsed; the tensor data is never requested. The size of the file comes from the
first answer's Content-Range. HF_TOKEN is sent to the Hub and dropped when a redirect leaves its host
(the Hub redirects downloads to a CDN with a signed URL). Standard library only.
"""

from __future__ import annotations

import io
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from gpu_preflight.errors import ModelSourceError
from gpu_preflight.models import gguf, hub
from gpu_preflight.models.base import ModelSource
from gpu_preflight.models.safetensors_header import TensorInfo

FIRST_RANGE_BYTES = 1 << 20
MAX_HEADER_BYTES = 256 << 20  # a header past this is not a model GGUF
TIMEOUT_S = 15.0

_SPEC = re.compile(r"^(?:hf://)?(?P<repo>[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95})/"
                   r"(?P<path>[^@\s]+\.gguf)(?:@(?P<rev>[^\s/]+(?:/[^\s/]+)*))?$", re.IGNORECASE)
_URL = re.compile(r"^https?://[^/]+/(?P<repo>[\w.-]+/[\w.-]+)/(?:resolve|blob)/(?P<rev>[^/]+)/(?P<path>.+\.gguf)$",
                  re.IGNORECASE)


def parse_spec(spec: str) -> tuple[str, str, str | None] | None:
    """(repo_id, path in the repo, revision) for a Hub GGUF spec, else None."""
    spec = (spec or "").strip()
    m = _URL.match(spec) or _SPEC.match(spec)
    if not m:
        return None
    return m["repo"], urllib.parse.unquote(m["path"]), m["rev"]


def is_hub_gguf(spec: str) -> bool:
    return parse_spec(spec) is not None and not os.path.exists(os.path.expanduser(spec))


class RangeFile(io.RawIOBase):
    """A read-only, seekable view of a remote file that fetches byte ranges on demand."""

    def __init__(self, url: str, token: str | None, label: str, opener: Any = None):
        super().__init__()
        self.url, self.token, self.label = url, token, label
        self.opener = opener or urllib.request.build_opener(_NoAuthAcrossHosts())
        self.buf = b""         # the file from byte 0 on, as far as fetched
        self.pos = 0
        self.size: int | None = None
        self.requests = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.total()}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def read(self, n: int = -1) -> bytes:
        end = self.total() if n is None or n < 0 else min(self.pos + n, self.total())
        self._ensure(end)
        out = self.buf[self.pos:end]
        self.pos += len(out)
        return out

    def total(self) -> int:
        if self.size is None:
            self._fetch(0, FIRST_RANGE_BYTES)
        return self.size or 0

    def _ensure(self, end: int) -> None:
        while len(self.buf) < end:
            want = max(end, min(2 * max(len(self.buf), FIRST_RANGE_BYTES), self.total()))
            if want > MAX_HEADER_BYTES:
                raise ModelSourceError(f"{self.label}: the GGUF header runs past {MAX_HEADER_BYTES >> 20} MiB",
                                       hint="this does not look like a model GGUF; download it and pass the path")
            self._fetch(len(self.buf), want)

    def _fetch(self, start: int, end: int) -> None:
        req = urllib.request.Request(self.url, headers={"Range": f"bytes={start}-{end - 1}",
                                                        "User-Agent": "gpu-preflight"})
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        self.requests += 1
        try:
            with self.opener.open(req, timeout=TIMEOUT_S) as resp:
                status = getattr(resp, "status", 200)
                data = resp.read(end - start + 1)
                crange = resp.headers.get("Content-Range", "")
        except urllib.error.HTTPError as exc:
            raise _http_error(exc, self.label) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise hub.HubUnreachable(f"cannot reach {self.url.split('/')[2]}: {reason}",
                                     hint="check the network or HF_ENDPOINT; or download the .gguf and pass its path"
                                     ) from None
        if status != 206:
            raise ModelSourceError(f"{self.label}: the server ignored the byte range (HTTP {status})",
                                   hint="this endpoint cannot serve a header alone; download the .gguf and pass its path")
        m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", crange)
        if not m or int(m.group(1)) != start:
            raise ModelSourceError(f"{self.label}: unexpected Content-Range {crange!r}",
                                   hint="download the .gguf and pass its path")
        if m.group(3) != "*":
            self.size = int(m.group(3))
        if start == len(self.buf):
            self.buf += data


class _NoAuthAcrossHosts(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


def _http_error(exc: urllib.error.HTTPError, label: str) -> ModelSourceError:
    if exc.code in (401, 403):
        return ModelSourceError(f"{label}: access refused (HTTP {exc.code})",
                                hint="for a gated or private repo set HF_TOKEN (or run `hf auth login`)")
    if exc.code == 404:
        return ModelSourceError(f"{label} was not found (HTTP 404)", hint="check the repo id, the file path and the revision")
    if exc.code == 416:
        return ModelSourceError(f"{label}: the file is empty or shorter than its header", hint="check the file on the Hub")
    if exc.code == 429 or exc.code >= 500:
        return hub.HubUnreachable(f"{label}: the Hub answered HTTP {exc.code}", hint="wait a minute and retry, or set HF_TOKEN")
    return ModelSourceError(f"{label}: HTTP {exc.code}", hint="check the URL")


def load_hub_gguf(spec: str, *, revision: str | None = None, offline: bool | None = None,
                  env: Mapping[str, str] | None = None, opener: Any = None) -> ModelSource:
    """The header of a Hub GGUF (and of the other parts of a split GGUF) as a ModelSource."""
    parsed = parse_spec(spec)
    if parsed is None:
        raise ModelSourceError(f"{spec!r} is not a Hub GGUF (org/name/file.gguf)", hint="check the spelling")
    repo, path, rev = parsed
    rev = rev or revision or "main"
    settings = hub.hub_settings(os.environ if env is None else env, offline)
    if settings.offline:
        raise ModelSourceError(f"{repo}/{path} is on the Hugging Face Hub and offline mode is on",
                               hint="download the .gguf and pass its path, or unset HF_HUB_OFFLINE / --offline")
    headers = [_read(settings, repo, path, rev, opener)]
    count = headers[0][0].metadata.get("split.count")
    warnings: list[str] = []
    if isinstance(count, int) and count > 1:
        m = re.match(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", path)
        if m:
            for i in range(1, count + 1):
                part = f"{m['prefix']}-{i:05d}-of-{count:05d}.gguf"
                if part != path:
                    headers.append(_read(settings, repo, part, rev, opener))
        else:
            warnings.append(f"{path} is part {headers[0][0].metadata.get('split.no', 0) + 1} of a {count}-file split "
                            "GGUF whose name does not follow name-0000N-of-0000M.gguf; only its own tensors were read")
    first = headers[0][0]
    tensors: list[TensorInfo] = []
    for h, part in headers:
        tensors += h.tensor_infos(part)
    name = first.metadata.get("general.name")
    return ModelSource(
        name=name if isinstance(name, str) and name else path.rsplit("/", 1)[-1][:-5],
        origin="gguf",
        config=gguf.gguf_to_hf_config(first.metadata, first.tensors),
        tensors=tensors,
        warnings=warnings,
        source_url=f"{settings.endpoint}/{repo}/blob/{rev}/{path}",
        revision=rev,
        metadata=gguf.scalar_metadata(first.metadata),
    )


def _read(settings: hub.HubSettings, repo: str, path: str, rev: str, opener: Any) -> tuple[gguf.GGUFHeader, str]:
    url = f"{settings.endpoint}/{repo}/resolve/{urllib.parse.quote(rev, safe='')}/{urllib.parse.quote(path)}"
    label = f"{repo}/{path}"
    f = RangeFile(url, settings.token, label, opener)
    return gguf.read_gguf_header_from(f, f.total(), label=label, path=url), path.rsplit("/", 1)[-1]
