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
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path, text: str) -> pathlib.Path:
    """Atomically writes UTF-8 text."""
    with atomic_path(path) as tmp:
        pathlib.Path(tmp).write_text(text, encoding="utf-8")
    return pathlib.Path(path)
