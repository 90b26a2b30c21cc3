"""nerfstudio's Trainer, with checkpoints that are never half-written.

Upstream ``torch.save``s straight to ``step-N.ckpt`` and then deletes older checkpoints, so a run
killed mid-save can leave only a truncated file. Here the same save goes to a temporary file in
the same folder and is renamed into place, which is atomic on POSIX filesystems.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Type
from unittest import mock

import torch
from nerfstudio.engine.trainer import Trainer, TrainerConfig

_torch_save = torch.save


def atomic_torch_save(obj, path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        _torch_save(obj, tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@dataclass
class EvosTrainerConfig(TrainerConfig):
    _target: Type = field(default_factory=lambda: EvosTrainer)


class EvosTrainer(Trainer):
    def save_checkpoint(self, step: int) -> None:
        with mock.patch.object(torch, "save", atomic_torch_save):
            super().save_checkpoint(step)
