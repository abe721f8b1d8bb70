"""Bounded, regular-file-only reads of the files a user points us at (model files, snapshots).

Every read of a user-named file goes through `open_regular` or `read_bounded`:

* the file is opened with O_NONBLOCK, so a FIFO (named pipe) cannot hang us, then `fstat`
  decides: only a regular file is read; a FIFO, a device (/dev/zero, /dev/tty), a socket or a
  folder gets a one-line error naming what it is;
* `read_bounded` refuses a file over its byte limit before reading it, and never reads more
  than limit + 1 bytes even when the size changes while it reads;
* with `root`, the path is resolved (symlinks followed) first and must stay inside `root`, so a
  `config.json` or `model.safetensors` that is a link to /etc/shadow is refused unread. The one
  exception is a link into a Hugging Face cache's `models--org--name/blobs/` folder, which is how
  the HF cache (and `huggingface-cli download --local-dir` before huggingface_hub 0.23) lays out
  a snapshot.

Nothing read from a file is ever put into these errors.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

from gpu_preflight.errors import ModelSourceError, PreflightError

ErrorType = type[PreflightError]


def kind_of(mode: int) -> str:
    """'a FIFO (named pipe)', 'a character device', ... for an st_mode."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file"


def inside(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> bool:
    """True when `path`, with every symlink resolved, is `root` (resolved) or below it, or is a
    blob of a Hugging Face cache (`.../models--org--name/blobs/FILE`)."""
    real = os.path.realpath(path)
    base = os.path.realpath(root)
    if real == base or real.startswith(base.rstrip(os.sep) + os.sep):
        return True
    parent = os.path.dirname(real)
    return os.path.basename(parent) == "blobs" and os.path.basename(os.path.dirname(parent)).startswith(
        ("models--", "datasets--"))


def open_regular(path: str | os.PathLike[str], label: str | None = None, *,
                 root: str | os.PathLike[str] | None = None,
                 error: ErrorType = ModelSourceError) -> BinaryIO:
    """Open `path` for binary reading if it is a regular file (inside `root` when given)."""
    label = label or os.fspath(path)
    if root is not None:
        if not inside(root, path):
            raise error(f"{label} is a link to a file outside the model folder; gpu-preflight reads only files"
                        " inside it", hint=f"copy the file into {os.fspath(root)} instead of linking it")
        path = os.path.realpath(path)  # the file just checked, not whatever the link points to later
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _os_error(error, label, exc) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"cannot read {label}: it is {kind_of(mode)}, not a regular file",
                        hint=f"pass a regular file; gpu-preflight does not read {kind_of(mode)}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bounded(path: str | os.PathLike[str], limit_bytes: int, label: str | None = None, *,
                 root: str | os.PathLike[str] | None = None, error: ErrorType = ModelSourceError,
                 what: str = "file") -> bytes:
    """The whole content of a regular file of at most `limit_bytes` bytes."""
    label = label or os.fspath(path)
    with open_regular(path, label, root=root, error=error) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit_bytes:
            raise _too_big(error, label, size, limit_bytes, what)
        try:
            data = f.read(limit_bytes + 1)
        except OSError as exc:
            raise _os_error(error, label, exc) from None
    if len(data) > limit_bytes:  # it grew while we read it
        raise _too_big(error, label, len(data), limit_bytes, what)
    return data


def _too_big(error: ErrorType, label: str, size: int, limit: int, what: str) -> PreflightError:
    return error(f"{label} is {size:,} bytes, over the {limit:,}-byte limit for a {what}",
                 hint=f"check that {label} is really a {what}")


def _os_error(error: ErrorType, label: str, exc: OSError) -> PreflightError:
    if exc.errno == errno.EISDIR:
        return error(f"cannot read {label}: it is a folder, not a regular file", hint="pass the file itself")
    return error(f"cannot read {label}: {exc.strerror or type(exc).__name__}",
                 hint=f"check the path; {label} must exist and be readable")
