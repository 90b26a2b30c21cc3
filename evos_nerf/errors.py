"""Errors a user can cause or fix. CLIs print these as one line, without a traceback.

``evos-image`` catches them itself. ``ns-train``, ``ns-eval`` and the other ``ns-*`` commands are
nerfstudio's own console scripts, which this plugin cannot wrap, so the plugin installs
:func:`install_excepthook` when nerfstudio loads it: an uncaught error of the kinds below ends the
process (exit code 1) with one ``error:`` line; every other exception keeps its traceback.
"""

from __future__ import annotations

import os
import pickle
import sys
import zipfile
from pathlib import Path
from types import TracebackType
from typing import Any, Dict, Iterator, Optional


class UserInputError(ValueError):
    """Bad input from the user: a path, an image, a ratio, a size. The message names the value."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the message names the step and what to try."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (disk full, no permission); the message names the file.
    The previous checkpoint is kept."""


ONE_LINE_ERRORS = (UserInputError, NonFiniteLossError, CheckpointWriteError)

_CHECKPOINT_READ_ERRORS = (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError)
_TORCH_SERIALIZATION = os.path.join("torch", "serialization.py")


def _frame_locals(tb: Optional[TracebackType], function: str, filename_suffix: str) -> Iterator[Dict[str, Any]]:
    """The local variables of every traceback frame running ``function`` in a file ending with ``filename_suffix``."""
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == function and code.co_filename.endswith(filename_suffix):
            yield tb.tb_frame.f_locals
        tb = tb.tb_next


def _failed_torch_load(tb: Optional[TracebackType]) -> Optional[Path]:
    """The file an exception's ``torch.load`` was reading, if it was raised inside torch.load.

    Upstream loaders (``ns-eval``'s ``eval_load_checkpoint``) call torch.load without naming the
    file in their errors; its frame still holds the path.
    """
    for frame_locals in _frame_locals(tb, "load", _TORCH_SERIALIZATION):
        f = frame_locals.get("f")
        if isinstance(f, (str, os.PathLike)):
            return Path(f)
    return None


_EVAL_UTILS = os.path.join("nerfstudio", "utils", "eval_utils.py")


def _failed_config_read(err: BaseException) -> Optional[str]:
    """The run config ``ns-eval --load-config`` (upstream ``eval_setup``) could not open, if that failed."""
    if not isinstance(err, OSError) or err.filename is None:
        return None
    for frame_locals in _frame_locals(err.__traceback__, "eval_setup", _EVAL_UTILS):
        config_path = frame_locals.get("config_path")
        if config_path is not None and os.fspath(config_path) == os.fspath(err.filename):
            return os.fspath(config_path)
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def one_line(err: BaseException) -> Optional[str]:
    """The one-line message for an error the user can act on, or None (a bug: keep its traceback)."""
    if isinstance(err, ONE_LINE_ERRORS):
        return " ".join(str(err).split())
    config = _failed_config_read(err)
    if config is not None:
        return f"cannot read --load-config {config}: {err.strerror or _first_line(err)} (give the config.yml ns-train wrote in the run's folder)"
    if isinstance(err, _CHECKPOINT_READ_ERRORS):
        path = _failed_torch_load(err.__traceback__)
        if path is not None:
            return (
                f"cannot read checkpoint {path}: {_first_line(err)[:200]} ({type(err).__name__}); "
                "the file is truncated or not a checkpoint: use another step's checkpoint or retrain"
            )
    return None


def install_excepthook() -> None:
    """Print :func:`one_line` errors as ``error: ...`` on stderr instead of a traceback (idempotent)."""
    if getattr(sys.excepthook, "evos_one_line", False):
        return
    previous = sys.excepthook

    def excepthook(kind, value, tb):
        line = one_line(value) if isinstance(value, BaseException) else None
        if line is None:
            previous(kind, value, tb)
        else:
            print(f"error: {line}", file=sys.stderr, flush=True)

    excepthook.evos_one_line = True  # type: ignore[attr-defined]
    sys.excepthook = excepthook
