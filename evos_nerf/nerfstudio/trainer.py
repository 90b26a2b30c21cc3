"""nerfstudio's Trainer, with checkpoints that are never half-written, and the EVOS state beside them.

Upstream ``torch.save``s straight to ``step-N.ckpt`` and then deletes older checkpoints, so a run
killed mid-save can leave only a truncated file. Here the same save goes to a temporary file on
the same filesystem and is renamed into place, which is atomic on POSIX filesystems.

``step-N.ckpt`` holds what upstream puts there (model, optimizers, schedulers, scaler). The EVOS
selection state is written by every rank, for its own shard, through torch.distributed.checkpoint
into ``<run>/evos_state/step-N`` (``evos_nerf.nerfstudio.evos_checkpoint``), and loaded back on any
world size after upstream loads ``--load-dir`` / ``--load-checkpoint``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Type
from unittest import mock

import torch
from nerfstudio.engine.trainer import Trainer, TrainerConfig

from evos_nerf.io import atomic_path
from evos_nerf.nerfstudio import evos_checkpoint
from evos_nerf.nerfstudio.inspection import resolve_selection_counts

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
    collective_timeout_s: float = 1800.0
    """Distributed runs (evos_nerf.train under torchrun): how long a collective may wait for the
    other ranks before the job stops with an error instead of hanging (a rank died or stalled)."""


class EvosTrainer(Trainer):
    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        resolve_selection_counts(self.config)  # per-pixel selection counts only when something shows them
        super().setup(test_mode)

    def save_checkpoint(self, step: int) -> None:  # every rank: the EVOS state is a collective save
        evos_checkpoint.save_for_trainer(self, step)
        with mock.patch.object(torch, "save", atomic_torch_save):
            super().save_checkpoint(step)  # writes on rank 0 only (@check_main_thread upstream)
        evos_checkpoint.finish_for_trainer(self, step)

    def _load_checkpoint(self) -> None:
        super()._load_checkpoint()
        evos_checkpoint.load_for_trainer(self)
