"""Atomic file writes: write to a temporary file beside the target, then rename.

A crash, a SIGTERM or a full disk mid-write leaves the previous file (or none) in place,
never a half-written one. Used by every writer of manifests, features, reports, audio and
exported checkpoints. Imports nothing from the package.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it; restored at once
    os.umask(mask)
    return mask


def shareable(path, *, directory: bool = False) -> None:
    """Gives `path` the mode a plain open()/mkdir() would have (0666/0777 minus the umask):
    mkstemp and mkdtemp create 0600/0700, which nobody else on a shared cluster can read."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_path(path, suffix: str = ".tmp") -> Iterator[str]:
    """Yields a temporary path in the target's folder; renames it onto `path` on success.

    `suffix` matters to writers that pick the format from the file name (soundfile).
    The temporary file is removed if the body raises.
    """
    target = pathlib.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    try:
        yield tmp
        if os.path.exists(tmp):
            shareable(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path, text: str) -> pathlib.Path:
    """Atomically writes UTF-8 text."""
    with atomic_path(path) as tmp:
        pathlib.Path(tmp).write_text(text, encoding="utf-8")
    return pathlib.Path(path)
