"""Where ``evos-image fit`` files its runs (OUT/IMAGE/STRATEGY), so that no run is ever lost.

* Every image gets its own folder: two files in one folder with the same stem (photo.png,
  photo.jpg) are filed under their full file names instead of both under ``photo``.
* A folder that already holds results is never written into: the fit stops before training with
  a message naming it, unless ``--overwrite`` is given. Then the old folder is replaced as a whole,
  so no stale strategy folder survives beside the new ones.
* Each image's runs are written into a hidden staging folder and moved into place only once every
  strategy has finished. A failed or interrupted fit leaves the previous results as they were; a
  staging folder left by a killed process is removed by the next fit into the same ``--out``.
* ``--out`` is created and test-written before anything is trained.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence

from evos_nerf.errors import UserInputError
from evos_nerf.image.imread import SKIMAGE_PREFIX

_STAGING = re.compile(r"^\.(partial|replaced)-(\d+)-")
"""Hidden folders this module creates in --out: .partial-PID-NAME (new runs), .replaced-PID-NAME (old ones)."""


def run_names(sources: Sequence[str]) -> List[str]:
    """One folder name per source, unique even on case-insensitive filesystems.

    A file is filed under its stem unless another source has the same stem; then under its full
    file name (photo.png, photo.jpg). Anything still equal gets -2, -3, ... in listing order.
    """
    stems = [s[len(SKIMAGE_PREFIX) :] if s.startswith(SKIMAGE_PREFIX) else Path(s).stem for s in sources]
    counts: Dict[str, int] = {}
    for stem in stems:
        counts[stem.casefold()] = counts.get(stem.casefold(), 0) + 1
    names = [
        Path(source).name if counts[stem.casefold()] > 1 and not source.startswith(SKIMAGE_PREFIX) else stem
        for source, stem in zip(sources, stems)
    ]
    taken: Dict[str, int] = {}
    unique = []
    for name in names:
        key = name.casefold()
        taken[key] = taken.get(key, 0) + 1
        unique.append(name if taken[key] == 1 else f"{name}-{taken[key]}")
    assert len({n.casefold() for n in unique}) == len(unique), unique
    return unique


def check_writable(out: Path) -> None:
    """Create ``out`` and write a probe file in it, so an unwritable --out fails before training."""
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UserInputError(f"--out {out} is not writable ({err.strerror or err})") from None


def _holds_results(path: Path) -> bool:
    if path.is_symlink() or path.is_file():
        return True
    return path.is_dir() and any(path.iterdir())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(out: Path) -> None:
    """Remove staging folders whose process is gone (a fit killed midway); live ones are left alone."""
    for entry in out.iterdir():
        match = _STAGING.match(entry.name)
        if match and entry.is_dir() and int(match.group(2)) != os.getpid() and not _alive(int(match.group(2))):
            shutil.rmtree(entry, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class ImageFolder:
    """OUT/NAME for one image: runs go to a staging folder that ``commit`` moves into place."""

    def __init__(self, out: Path, name: str, overwrite: bool) -> None:
        self.final = out / name
        self.overwrite = overwrite
        self.staging = out / f".partial-{os.getpid()}-{name}"
        _remove(self.staging)
        self.staging.mkdir()

    def run_dir(self, strategy: str) -> Path:
        return self.staging / strategy

    def commit(self) -> Path:
        """Move the finished runs to OUT/NAME, replacing an old folder there only with --overwrite."""
        replaced = None
        if self.final.is_dir() and not self.final.is_symlink() and not any(self.final.iterdir()):
            self.final.rmdir()
        elif self.final.exists() or self.final.is_symlink():
            if not self.overwrite:
                raise UserInputError(f"{self.final} appeared while fitting; the new runs are kept in {self.staging}")
            # Move the old folder aside first: OUT/NAME is never a mix of old and new runs.
            replaced = self.final.parent / f".replaced-{os.getpid()}-{self.final.name}"
            _remove(replaced)
            os.replace(self.final, replaced)
        os.rename(self.staging, self.final)
        if replaced is not None:
            _remove(replaced)
        return self.final

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def prepare_out(out: Path, names: Sequence[str], overwrite: bool) -> None:
    """Check --out before training: writable, and no image folder in it holds results (unless --overwrite)."""
    check_writable(out)
    remove_stale_staging(out)
    if overwrite:
        return
    existing = [out / name for name in names if _holds_results(out / name)]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise UserInputError(
            f"{existing[0]}{more} already holds results; pass --overwrite to replace them, or choose another --out"
        )
