"""Atomic file writes: a reader (or a resumed run) never sees a half-written file.

The temporary file comes from ``tempfile.mkstemp``, which creates it 0600 so no one else can read
it while it is half written. A plain ``open()`` would have given 0666 minus the umask (0644 with the
usual 022), so before the rename the file gets that mode back; an existing file keeps its own
mode, as it would if it were rewritten in place.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

_NEW_FILE_MODE = 0o666
"""What open() asks for on a new file, before the umask."""


def current_umask() -> int:
    """The process umask, read without changing it when /proc allows (os.umask alone must set it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # briefly changes the process umask; restored at once
    os.umask(mask)
    return mask


def _final_mode(path: Path) -> int:
    """Mode ``path`` would end up with had it been written with open(): its own if it exists."""
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return _NEW_FILE_MODE & ~current_umask()


@contextmanager
def atomic_path(path: Path, tmp_dir: Optional[Path] = None) -> Iterator[Path]:
    """Yield a temporary path; it replaces ``path`` only if the block succeeds.

    ``tmp_dir`` (default: beside ``path``) must be on the same filesystem for the rename to be atomic.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=tmp_dir or path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp_path, _final_mode(path))
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
