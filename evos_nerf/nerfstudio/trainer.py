"""nerfstudio's Trainer, with checkpoints that are never half-written.

Upstream ``torch.save``s straight to ``step-N.ckpt`` and then deletes older checkpoints, so a run
killed mid-save can leave only a truncated file. Here the same save goes to a temporary file on
the same filesystem and is renamed into place, which is atomic on POSIX filesystems.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Type
from unittest import mock

import torch
from nerfstudio.engine.trainer import Trainer, TrainerConfig

from evos_nerf.io import atomic_path

_torch_save = torch.save


def atomic_torch_save(obj, path) -> None:
    # The temporary file goes one folder up: nerfstudio parses every file name in the checkpoint
    # folder as step-N.ckpt, so a leftover from a killed save there would break --load-dir.
    path = Path(path)
    with atomic_path(path, tmp_dir=path.parent.parent) as tmp:
        _torch_save(obj, tmp)


@dataclass
class EvosTrainerConfig(TrainerConfig):
    _target: Type = field(default_factory=lambda: EvosTrainer)


class EvosTrainer(Trainer):
    def save_checkpoint(self, step: int) -> None:
        with mock.patch.object(torch, "save", atomic_torch_save):
            super().save_checkpoint(step)
