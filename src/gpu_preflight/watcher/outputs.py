"""Where the record and reports go, checked before the command runs, and how they are written.

`--out DIR` gives DIR/watch.json, watch.jsonl (the live stream), watch.html and watch.png;
`--json/--html/--png FILE` pick single files (alone: only those are written). With none of
them: ./preflight-watch-YYYYmmdd-HHMMSS/, created exclusively (`-2`, `-3`... when runs start in
the same second, so parallel runs never share a folder). The stream always goes next to the JSON
record (or the first report asked for). A place we cannot write is refused up front, so a long
job never runs only to lose its report.

Safety rules (each one a bug once):
* a report path that is a symbolic link, a FIFO, a device or a socket is refused, never
  replaced or written through (`--json /dev/null` as root once turned /dev/null into a file);
* reports are written to a temp file with a unique name beside the target, then renamed onto it;
  the temp file is removed when anything fails (a full disk), so no neighbour is touched;
* the stream `X.jsonl` is replaced only when it is an earlier watch stream that no running
  watcher holds (each watcher keeps an exclusive lock on its stream); any other file there is
  refused; the phase channel gets a fresh name when `X.phases.jsonl` is taken.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

from gpu_preflight.errors import UsageError

STREAM_MAGIC = b'{"type":"header","schema":"gpu-preflight.watch"'
_MAX_AUTO_TRIES = 10_000


@dataclass
class OutputPaths:
    jsonl: Path
    channel: Path  # PREFLIGHT_WATCH_CHANNEL: where gpu_preflight.phase() appends
    json: Path | None = None
    html: Path | None = None
    png: Path | None = None
    auto_dir: Path | None = None  # the default folder, created exclusively by check_writable

    def as_dict(self) -> dict[str, str | None]:
        return {k: (str(v) if v else None) for k, v in
                (("json", self.json), ("jsonl", self.jsonl), ("html", self.html), ("png", self.png))}

    def reports(self) -> list[Path]:
        return [p for p in (self.json, self.html, self.png) if p is not None]


def resolve(out_dir: str | None, json_path: str | None, html_path: str | None, png_path: str | None,
            now: float | None = None, cwd: Path | None = None) -> OutputPaths:
    """The paths; nothing is created here (check_writable creates the folders)."""
    cwd = cwd or Path.cwd()
    auto = None
    if not any((out_dir, json_path, html_path, png_path)):
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
        auto = cwd / f"preflight-watch-{stamp}"
        out_dir = str(auto)
    paths = _in_dir(out_dir, json_path, html_path, png_path)
    paths.auto_dir = auto
    return paths


def _in_dir(out_dir: str | None, json_path: str | None, html_path: str | None, png_path: str | None) -> OutputPaths:
    js = Path(json_path) if json_path else None
    html = Path(html_path) if html_path else None
    png = Path(png_path) if png_path else None
    if out_dir:
        d = Path(out_dir)
        js, html, png = js or d / "watch.json", html or d / "watch.html", png or d / "watch.png"
    anchor = js or html or png
    assert anchor is not None
    stem = anchor.name[: -len(anchor.suffix)] if anchor.suffix else anchor.name
    return OutputPaths(jsonl=anchor.with_name(stem + ".jsonl"), channel=anchor.with_name(stem + ".phases.jsonl"),
                       json=js, html=html, png=png)


def _refuse(path: Path, why: str, hint: str | None = None) -> UsageError:
    return UsageError(f"cannot write the watch report to {path}: {why}",
                      hint=hint or "choose a writable place with --out DIR (the command was not started)")


def special_kind(path: Path) -> str | None:
    """None for a missing path or a regular file; otherwise what it is ("a symbolic link"...)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"not inspectable ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    from gpu_preflight.fileio import kind_of

    return kind_of(mode)


def check_writable(paths: OutputPaths) -> None:
    """Create the folders (the default one exclusively) and prove each file can be written;
    raise UsageError otherwise. Nothing outside our own new files is changed."""
    if paths.auto_dir is not None:
        _create_auto_dir(paths)
    for path in (paths.json, paths.jsonl, paths.html, paths.png):
        if path is None:
            continue
        parent = path.parent if str(path.parent) else Path(".")
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _refuse(path, exc.strerror or str(exc)) from None
        kind = special_kind(path)
        if kind is not None:
            raise _refuse(path, f"it is {kind}; watch writes only regular files and never replaces or follows one",
                          hint="pass a plain file name, or --out DIR (the command was not started)")
        if path.exists() and not os.access(path, os.W_OK):
            raise _refuse(path, "permission denied")
        try:
            with tempfile.NamedTemporaryFile(dir=parent, prefix=".preflight-watch-", delete=True):
                pass
        except OSError as exc:
            raise _refuse(path, exc.strerror or str(exc)) from None
    _check_stream(paths.jsonl)


def _create_auto_dir(paths: OutputPaths) -> None:
    """mkdir the default folder, or the first free `-N` variant: exclusive, so two runs started in
    the same second (or twenty) each get their own folder."""
    base = paths.auto_dir
    assert base is not None
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _refuse(base, exc.strerror or str(exc)) from None
    for n in range(1, _MAX_AUTO_TRIES + 1):
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        except OSError as exc:
            raise _refuse(candidate, exc.strerror or str(exc)) from None
        fresh = _in_dir(str(candidate), None, None, None)
        paths.json, paths.jsonl, paths.channel = fresh.json, fresh.jsonl, fresh.channel
        paths.html = fresh.html if paths.html is not None else None
        paths.png = fresh.png if paths.png is not None else None
        paths.auto_dir = candidate
        return
    raise _refuse(base, f"{_MAX_AUTO_TRIES:,} folders of that name exist already")


def _check_stream(path: Path) -> None:
    """The stream may replace only an earlier watch stream (or an empty file)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return
    except OSError as exc:
        why = "it is a symbolic link" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
        raise _refuse(path, why) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _refuse(path, "it is not a regular file")
        head = os.read(fd, len(STREAM_MAGIC))
    finally:
        os.close(fd)
    if head and head != STREAM_MAGIC:
        raise _refuse(path, "the file exists and is not a preflight watch stream (watch puts its stream next to "
                            "the JSON record and overwrites nothing else)",
                      hint=f"move {path.name} away, or pick another --json name or --out DIR "
                           "(the command was not started)")


def open_stream(path: Path) -> IO[bytes]:
    """Open (create or replace) the stream, holding an exclusive lock on it for the whole run,
    so a second watcher given the same paths refuses instead of interleaving with us."""
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | \
        getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        why = "it is a symbolic link" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
        raise _refuse(path, why) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _refuse(path, "it is not a regular file")
        _lock(fd, path)
        _check_stream(path)  # it might have become someone else's file since the first check
        os.set_blocking(fd, True)
        os.ftruncate(fd, 0)
        return os.fdopen(fd, "wb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def _lock(fd: int, path: Path) -> None:
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _refuse(path, "another preflight watch is writing this stream now",
                      hint="give each watch its own --out DIR or --json FILE (the command was not started)") from None
    except OSError:
        pass  # a filesystem without locks: carry on


def create_channel(path: Path) -> Path:
    """Create the phase channel exclusively: `path`, or a fresh name beside it when taken."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    candidate = path
    for _ in range(100):
        try:
            os.close(os.open(candidate, flags, 0o666))
            return candidate
        except FileExistsError:
            stem = path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.name
            candidate = path.with_name(f"{stem}-{secrets.token_hex(4)}.jsonl")
    raise OSError(errno.EEXIST, f"no free name for the phase channel next to {path}")


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write `path` through a uniquely named temp file in the same folder, then rename it onto
    `path`. Refuses (OSError) a `path` that is a symlink or not a regular file; on any failure the
    temp file is removed and `path` is left as it was."""
    kind = special_kind(path)
    if kind is not None:
        raise OSError(errno.EEXIST, f"{path} is {kind}; not replaced")
    parent = path.parent if str(path.parent) else Path(".")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    else:
        raise OSError(errno.EEXIST, f"no free temp name next to {path}")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # a full disk shows here, not after the rename
        if special_kind(path) is not None:  # it changed while we wrote
            raise OSError(errno.EEXIST, f"{path} became {special_kind(path)}; not replaced")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
