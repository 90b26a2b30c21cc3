"""nerfstudio's Trainer, with checkpoints that are never half-written and hold the whole fitness state.

Upstream ``torch.save``s straight to ``step-N.ckpt`` and then deletes older checkpoints, so a run
killed mid-save can leave only a truncated file. Here the same save goes to a temporary file on
the same filesystem and is renamed into place, which is atomic on POSIX filesystems.

Upstream saves on rank 0 only. In a distributed run rank 0 holds just its shard of the fitness
store, so every rank first takes part in gathering the shards (a collective), then rank 0 writes
one checkpoint with the global store; any world size can resume from it.
"""

from __future__ import annotations

from contextlib import nullcontext
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
    collective_timeout_s: float = 1800.0
    """Distributed runs (evos_nerf.train under torchrun): how long a collective may wait for the
    other ranks before the job stops with an error instead of hanging (a rank died or stalled)."""


class EvosTrainer(Trainer):
    def save_checkpoint(self, step: int) -> None:  # every rank: the gather is a collective
        gathered = getattr(self.pipeline.datamanager, "gathered_for_checkpoint", None)
        with gathered() if gathered is not None else nullcontext():
            with mock.patch.object(torch, "save", atomic_torch_save):
                super().save_checkpoint(step)  # writes on rank 0 only (@check_main_thread upstream)
