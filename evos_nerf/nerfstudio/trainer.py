"""nerfstudio's Trainer, with checkpoints that are never half-written and never NaN, the EVOS state
saved per rank beside them, and the run's flags and the checkpoint to resume from checked up front.

Saving: upstream ``torch.save``s straight to ``step-N.ckpt`` and then deletes older checkpoints,
so a run killed mid-save can leave only a truncated file. Here the same state goes to a
temporary file on the same filesystem and is renamed into place (atomic on POSIX), after a
check that the model's weights are finite; a failed write (disk full) stops the run with one
line and leaves the previous checkpoint as it was. Temporaries of a save that was killed are
removed at the next start and save. As upstream, only the latest checkpoint is kept unless
``--save-only-latest-checkpoint False``.

``step-N.ckpt`` holds what upstream puts there (model, optimizers, schedulers, scaler), written by
rank 0. The EVOS selection state is written by every rank, for its own shard, through
torch.distributed.checkpoint into ``<run>/evos_state/step-N`` (``evos_nerf.nerfstudio.evos_checkpoint``)
just before, and loaded back on any world size after ``step-N.ckpt`` is.

Resuming: ``--load-dir`` / ``--load-step`` / ``--load-checkpoint`` are resolved before any data
is loaded, and a missing, empty or wrong folder, a truncated file or a checkpoint of another
setting is one ``error:`` line naming the flag or file (``evos_nerf.errors``).
"""

from __future__ import annotations

import errno
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Type

import torch
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.decorators import check_main_thread
from nerfstudio.utils.rich_utils import CONSOLE

from evos_nerf.errors import CheckpointWriteError, NonFiniteLossError, UserInputError
from evos_nerf.io import atomic_path
from evos_nerf.nerfstudio import evos_checkpoint
from evos_nerf.nerfstudio.data_checks import check_scene
from evos_nerf.nerfstudio.datamanager import EvosDataManagerConfig
from evos_nerf.nerfstudio.inspection import resolve_selection_counts

CHECKPOINT_NAME = re.compile(r"^step-(\d+)\.ckpt$")
"""What nerfstudio writes (``step-{step:09d}.ckpt``) and what --load-dir looks for."""
TEMPORARY_GLOB = ".step-*.ckpt.*.tmp.ckpt"
"""Temporaries of atomic_torch_save (evos_nerf.io.atomic_path names them ``.NAME.XXXX.tmp.ckpt``)."""
_CHECKPOINT_KEYS = ("step", "pipeline", "optimizers", "scalers")


def _torch_save(obj, path) -> None:
    torch.save(obj, path)


def atomic_torch_save(obj, path) -> None:
    # The temporary file goes one folder up: nerfstudio parses every file name in the checkpoint
    # folder as step-N.ckpt, so a leftover from a killed save there would break --load-dir.
    path = Path(path)
    with atomic_path(path, tmp_dir=path.parent.parent) as tmp:
        _torch_save(obj, tmp)


def remove_temporaries(checkpoint_dir: Path) -> List[Path]:
    """Delete what killed saves left behind (beside and inside the checkpoint folder)."""
    removed = []
    for folder in (checkpoint_dir.parent, checkpoint_dir):
        for leftover in folder.glob(TEMPORARY_GLOB) if folder.is_dir() else ():
            leftover.unlink(missing_ok=True)
            removed.append(leftover)
    return removed


def checkpoint_steps(folder: Path) -> Dict[int, Path]:
    """step -> checkpoint file of a nerfstudio_models folder (other files are ignored)."""
    found = {}
    for path in folder.iterdir():
        match = CHECKPOINT_NAME.match(path.name)
        if match and path.is_file():
            found[int(match.group(1))] = path
    return found


def resolve_checkpoint(load_dir: Optional[Path], load_step: Optional[int], load_checkpoint: Optional[Path]) -> Optional[Path]:
    """The checkpoint a run resumes from (``--load-dir`` wins, as upstream), or None."""
    if load_dir is not None:
        folder = Path(load_dir)
        if not folder.exists():
            raise UserInputError(f"--load-dir {folder} does not exist: point it at a run's nerfstudio_models folder")
        if not folder.is_dir():
            raise UserInputError(f"--load-dir {folder} is not a folder (for a single checkpoint file use --load-checkpoint)")
        steps = checkpoint_steps(folder)
        if not steps:
            inner = folder / "nerfstudio_models"
            hint = f"did you mean --load-dir {inner}?" if inner.is_dir() else "point it at a run's nerfstudio_models folder"
            raise UserInputError(f"--load-dir {folder} holds no step-NNNNNNNNN.ckpt checkpoint: {hint}")
        if load_step is None:
            return steps[max(steps)]
        if load_step not in steps:
            raise UserInputError(
                f"--load-step {load_step}: {folder} has no step-{load_step:09d}.ckpt (it has step(s) "
                f"{', '.join(str(s) for s in sorted(steps)[-5:])})"
            )
        return steps[load_step]
    if load_checkpoint is not None:
        path = Path(load_checkpoint)
        if not path.is_file():
            raise UserInputError(f"--load-checkpoint {path} is not a file")
        return path
    return None


def read_checkpoint(path: Path) -> dict:
    """torch.load a nerfstudio checkpoint, or one line naming the file when it cannot be read."""
    try:
        state = torch.load(path, map_location="cpu")
    except Exception as err:  # noqa: BLE001 -- zip, pickle, EOF and OS errors all mean "unreadable"
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise UserInputError(
            f"cannot read checkpoint {path}: {reason} ({type(err).__name__}); it is truncated or not a "
            "nerfstudio checkpoint: resume from another one (--load-step, --load-checkpoint) or retrain"
        ) from None
    missing = [key for key in _CHECKPOINT_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise UserInputError(f"{path} is not a nerfstudio checkpoint (no {', '.join(missing)})")
    return state


def check_run_flags(config: TrainerConfig) -> None:
    """Trainer flags that nerfstudio does not check (0 iterations crashed after writing a step-0 checkpoint)."""
    iterations = config.max_num_iterations
    resuming = config.load_dir is not None or config.load_checkpoint is not None
    if iterations < 0 or (iterations == 0 and not resuming):
        raise UserInputError(
            f"--max-num-iterations must be >= 1, got {iterations}"
            + (" (0 is only for re-saving a checkpoint given with --load-dir)" if iterations == 0 else "")
        )


def check_output_folder(config: TrainerConfig) -> None:
    """Never train over a finished run: nerfstudio would replace its config.yml and, keeping only the
    latest checkpoint, delete its checkpoints, unless this run continues that one (``--load-dir``)."""
    folder = config.get_checkpoint_dir()
    previous = checkpoint_steps(folder) if folder.is_dir() else {}
    if not previous:
        return
    resume = config.load_dir if config.load_dir is not None else (
        config.load_checkpoint.parent if config.load_checkpoint is not None else None)
    if resume is not None and Path(resume).resolve() == folder.resolve():
        return
    raise UserInputError(
        f"{config.get_base_dir()} already holds a trained run ({previous[max(previous)].name}): choose another "
        f"--timestamp or --experiment-name, or continue that run with --load-dir {folder}"
    )


def _write_failure(path: Path, err: BaseException) -> str:
    """Why a checkpoint write failed, in words: torch reports a full disk as 'unexpected pos'."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    full = (isinstance(err, OSError) and err.errno == errno.ENOSPC) or "unexpected pos" in str(err)
    if full:
        reason = "no space left on device"
    else:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    if free is not None:
        reason += f" ({free / 2**20:.0f} MiB free there)"
    return reason


def _is_write_failure(err: BaseException) -> bool:
    if isinstance(err, OSError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and any(s in text for s in ("unexpected pos", "PytorchStreamWriter", "write failed"))


@dataclass
class EvosTrainerConfig(TrainerConfig):
    _target: Type = field(default_factory=lambda: EvosTrainer)
    collective_timeout_s: float = 1800.0
    """Distributed runs (evos_nerf.train under torchrun): how long a collective may wait for the
    other ranks before the job stops with an error instead of hanging (a rank died or stalled)."""

    def save_config(self) -> None:
        """ns-train writes config.yml before the trainer exists (nerfstudio's ``scripts/train.py``), so a
        re-run with bad data would replace a finished run's config and only then fail. Check first what
        would stop the run or overwrite one: the run flags, the datamanager's flags and scene, the folder."""
        check_run_flags(self)
        datamanager = getattr(self.pipeline, "datamanager", None)
        if isinstance(datamanager, EvosDataManagerConfig):
            datamanager.validate()
            check_scene(datamanager.dataparser, datamanager.data, ["train", "val"])
        check_output_folder(self)
        super().save_config()


class EvosTrainer(Trainer):
    def __init__(self, config: TrainerConfig, local_rank: int = 0, world_size: int = 1) -> None:
        check_run_flags(config)
        self.resume_from = resolve_checkpoint(config.load_dir, config.load_step, config.load_checkpoint)
        super().__init__(config, local_rank, world_size)

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        self._remove_temporaries()
        resolve_selection_counts(self.config)  # per-pixel selection counts only when something shows them
        super().setup(test_mode)

    @check_main_thread
    def _remove_temporaries(self) -> None:
        removed = remove_temporaries(self.checkpoint_dir)
        if removed:
            CONSOLE.print(f"removed {len(removed)} temporary file(s) of an interrupted checkpoint save from {self.base_dir}")

    def _load_checkpoint(self) -> None:
        """Upstream's resume, from the checkpoint resolved in __init__, with one-line errors."""
        path = self.resume_from
        if path is None:
            CONSOLE.print("No Nerfstudio checkpoint to load, so training from scratch.")
            return
        state = read_checkpoint(path)
        self._start_step = state["step"] + 1
        try:
            self.pipeline.load_pipeline(state["pipeline"], state["step"])
            self.optimizers.load_optimizers(state["optimizers"])
            if "schedulers" in state and self.config.load_scheduler:
                self.optimizers.load_schedulers(state["schedulers"])
            self.grad_scaler.load_state_dict(state["scalers"])
        except UserInputError:
            raise
        except (ValueError, RuntimeError, KeyError) as err:
            detail = " ".join(" ".join(str(err).strip().splitlines()[:2]).split())[:300].rstrip(".")
            raise UserInputError(
                f"checkpoint {path} does not fit this run: {detail}. Resume with the data and model flags it "
                "was trained with (its run's config.yml)"
            ) from None
        CONSOLE.print(f"Done loading Nerfstudio checkpoint from {path}")
        evos_checkpoint.load_for_trainer(self, path)

    def train(self) -> None:
        try:
            if self.config.max_num_iterations == 0:  # resuming (check_run_flags): re-save what was loaded
                outputs = getattr(self.pipeline.datamanager, "train_dataparser_outputs", None)
                if outputs is not None:
                    outputs.save_dataparser_transform(self.base_dir / "dataparser_transforms.json")
                self.step = self._start_step - 1
                self.save_checkpoint(self.step)
                CONSOLE.print(f"--max-num-iterations 0: re-saved step {self.step} to {self.checkpoint_dir}")
                return
            super().train()
        except NonFiniteLossError as err:
            raise NonFiniteLossError(f"{err}; {self._kept_checkpoint()}") from None

    def _kept_checkpoint(self) -> str:
        saved = checkpoint_steps(self.checkpoint_dir) if self.checkpoint_dir.is_dir() else {}
        if not saved:
            return "no checkpoint was written"
        return f"nothing was saved after the last good checkpoint, {saved[max(saved)]}"

    def save_checkpoint(self, step: int) -> None:  # every rank: the EVOS state is a collective save
        evos_checkpoint.save_for_trainer(self, step)
        self._write_checkpoint(step)
        evos_checkpoint.finish_for_trainer(self, step)

    @check_main_thread
    def _write_checkpoint(self, step: int) -> None:
        """Trainer.save_checkpoint's state, written atomically, never with non-finite weights."""
        path = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        bad = [name for name, p in self.pipeline.model.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            raise NonFiniteLossError(
                f"model weights are not finite at step {step} ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): "
                f"{path.name} was not written"
            )
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        remove_temporaries(self.checkpoint_dir)
        pipeline = self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline
        state = {
            "step": step,
            "pipeline": pipeline.state_dict(),
            "optimizers": {k: v.state_dict() for (k, v) in self.optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for (k, v) in self.optimizers.schedulers.items()},
            "scalers": self.grad_scaler.state_dict(),
        }
        try:
            atomic_torch_save(state, path)
        except Exception as err:  # noqa: BLE001 -- only write failures are turned into one line
            if not _is_write_failure(err):
                raise
            others = {s: p for s, p in checkpoint_steps(self.checkpoint_dir).items() if p != path}
            kept = f"the previous checkpoint {others[max(others)]} is kept" if others else "no earlier checkpoint exists"
            raise CheckpointWriteError(
                f"could not write checkpoint {path}: {_write_failure(path, err)}; {kept}. "
                f"Free space (or use another --output-dir) and resume with --load-dir {self.checkpoint_dir}"
            ) from None
        if self.config.save_only_latest_checkpoint:
            for old in self.checkpoint_dir.glob("*.ckpt"):
                if old != path:
                    old.unlink()
