"""Where the record and reports go, checked before the command runs.

`--out DIR` gives DIR/watch.json, watch.jsonl (the live stream), watch.html and watch.png;
`--json/--html/--png FILE` pick single files (alone: only those are written). With none of
them: ./preflight-watch-YYYYmmdd-HHMMSS/. The stream always goes next to the JSON record (or
the first report asked for). A place we cannot write is refused up front, so a long job never
runs only to lose its report.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from gpu_preflight.errors import UsageError


@dataclass
class OutputPaths:
    jsonl: Path
    channel: Path  # PREFLIGHT_WATCH_CHANNEL: where gpu_preflight.phase() appends
    json: Path | None = None
    html: Path | None = None
    png: Path | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {k: (str(v) if v else None) for k, v in
                (("json", self.json), ("jsonl", self.jsonl), ("html", self.html), ("png", self.png))}


def resolve(out_dir: str | None, json_path: str | None, html_path: str | None, png_path: str | None,
            now: float | None = None, cwd: Path | None = None) -> OutputPaths:
    cwd = cwd or Path.cwd()
    if not any((out_dir, json_path, html_path, png_path)):
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
        base = cwd / f"preflight-watch-{stamp}"
        n = 2
        while base.exists():
            base = cwd / f"preflight-watch-{stamp}-{n}"
            n += 1
        out_dir = str(base)
    js = Path(json_path) if json_path else None
    html = Path(html_path) if html_path else None
    png = Path(png_path) if png_path else None
    if out_dir:
        d = Path(out_dir)
        js, html, png = js or d / "watch.json", html or d / "watch.html", png or d / "watch.png"
    anchor = js or html or png
    assert anchor is not None
    stem = anchor.name[: -len(anchor.suffix)] if anchor.suffix else anchor.name
    jsonl = anchor.with_name(stem + ".jsonl")
    channel = anchor.with_name(stem + ".phases.jsonl")
    return OutputPaths(jsonl=jsonl, channel=channel, json=js, html=html, png=png)


def _refuse(path: Path, why: str) -> UsageError:
    return UsageError(f"cannot write the watch report to {path}: {why}",
                      hint="choose a writable place with --out DIR (the command was not started)")


def check_writable(paths: OutputPaths) -> None:
    """Create the folders and prove each file can be written; raise UsageError otherwise."""
    for path in (paths.json, paths.jsonl, paths.channel, paths.html, paths.png):
        if path is None:
            continue
        parent = path.parent if str(path.parent) else Path(".")
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _refuse(path, exc.strerror or str(exc)) from None
        if path.is_dir():
            raise _refuse(path, "it is a folder")
        if path.exists() and not os.access(path, os.W_OK):
            raise _refuse(path, "permission denied")
        try:
            with tempfile.NamedTemporaryFile(dir=parent, prefix=".preflight-watch-", delete=True):
                pass
        except OSError as exc:
            raise _refuse(path, exc.strerror or str(exc)) from None
