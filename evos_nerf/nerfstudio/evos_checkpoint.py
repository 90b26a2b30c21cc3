"""The EVOS selection state of a run, saved by every rank through torch.distributed.checkpoint (DCP).

    <run>/nerfstudio_models/step-000000029.ckpt   model and optimizers, as upstream writes them
    <run>/evos_state/step-000000029/              DCP: .metadata + one __<rank>_0.distcp per rank

``step-N.ckpt`` is exactly what upstream nerfstudio writes (plus the run identity in the
datamanager's extra state), so ``ns-eval``, ``ns-viewer`` and ``ns-render`` work on the run. The
EVOS folder is beside ``nerfstudio_models``, not in it: nerfstudio parses every name there as
``step-N.ckpt``.

Entries (``RaySelector.sharded_state``): per camera (``fitness/cam00042``, ``epoch/...``, ``pool/...``
as packed membership bits, ``visits/...`` when tracked), which any world size can load bit for bit;
per rank (``generator/rank1``, ``errormap/rank1/...``), restored only on the same world size; the
rest is the same on every rank. ``meta/*`` adds the format, the step, the world size, the training
cameras' sizes (the dataset fingerprint) and the run identity.

Saving is a collective and atomic: every rank writes only its own file (nothing is gathered, so a
rank's peak host memory is its own shard's) into ``.tmp-step-N`` beside the final folder; after a
barrier rank 0 renames it into place. A save killed midway leaves the previous checkpoint pair
intact; the next successful save removes leftovers and, when nerfstudio keeps only its latest
checkpoint, every older EVOS state.

Loading first checks that the folder is complete (``.metadata``, and every file it names at full
length) and that it belongs to the nerfstudio checkpoint being loaded (same step, run and dataset);
each problem is a one-line ``UserInputError`` naming the file or folder. Single-process runs use
DCP without a process group.
"""

from __future__ import annotations

import os
import pickle
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.distributed.checkpoint as dcp
from rich.console import Console
from torch import Tensor

from evos_nerf import distributed
from evos_nerf.core.selector import RaySelector, camera_key
from evos_nerf.errors import UserInputError

if TYPE_CHECKING:
    from nerfstudio.engine.trainer import Trainer

STATE_DIR = "evos_state"
FORMAT = 1
console = Console()


def state_root(checkpoint_dir: Path) -> Path:
    """``<run>/evos_state`` for ``<run>/nerfstudio_models``."""
    return Path(checkpoint_dir).parent / STATE_DIR


def step_dir(checkpoint_dir: Path, step: int) -> Path:
    return state_root(checkpoint_dir) / f"step-{step:09d}"


@contextmanager
def _quiet() -> Iterator[None]:
    # DCP warns that it "assumes the intent" to save in one process even when no_dist says so.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to .* in a single process.*")
        yield


def _text(value: str) -> Tensor:
    return torch.tensor(list(value.encode()), dtype=torch.uint8)


def _untext(value: Tensor) -> str:
    return bytes(value.tolist()).decode()


# -- saving ------------------------------------------------------------------------------------------
def save(selector: RaySelector, checkpoint_dir: Path, step: int, camera_sizes: Sequence[Tuple[int, int]], run_id: str) -> Path:
    """Write this rank's EVOS state for ``step`` (a collective: call on every rank). Returns the folder."""
    final = step_dir(checkpoint_dir, step)
    tmp = final.with_name(f".tmp-{final.name}")
    main = distributed.get_rank() == 0
    if main:
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # a save of this step killed earlier
    distributed.barrier()
    state = {key: _exact_storage(value) for key, value in selector.sharded_state().items()}
    state.update({
        "meta/format": torch.tensor([FORMAT]),
        "meta/step": torch.tensor([int(step)]),
        "meta/world_size": torch.tensor([distributed.get_world_size()]),
        "meta/camera_sizes": torch.tensor([list(s) for s in camera_sizes], dtype=torch.int64).reshape(-1, 2),
        "meta/run_id": _text(run_id),
    })
    with _quiet():
        dcp.save(state, storage_writer=dcp.FileSystemWriter(tmp, sync_files=True), no_dist=not distributed.is_distributed())
    del state
    distributed.barrier()  # every rank's file and rank 0's .metadata are complete
    if main:
        _move_into_place(tmp, final)
    distributed.barrier()
    return final


def _exact_storage(t: Tensor) -> Tensor:
    """The same memory as a tensor that owns exactly its bytes (CPU; no copy).

    DCP's writer clones every entry whose storage is larger than the entry, and keeps the clones
    until the rank's file is written: for the store's per-camera slices that would be a second copy
    of the whole shard. CUDA entries are copied to the host by DCP regardless (and kept the same
    way), so a GPU store costs up to its shard in host memory while saving.
    """
    if t.device.type != "cpu" or t.untyped_storage().nbytes() == t.nbytes or t.dtype == torch.bfloat16:
        return t
    return torch.from_numpy(t.detach().numpy())


def _move_into_place(tmp: Path, final: Path) -> None:
    old = final.with_name(f".old-{final.name}")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():  # the same step saved again (a resume that reached it once more)
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def finish_save(checkpoint_dir: Path, step: int, keep_only_latest: bool) -> None:
    """After nerfstudio wrote ``step-N.ckpt`` (rank 0): remove leftovers of killed saves and the EVOS
    states nerfstudio no longer has a checkpoint for (all but the latest when it keeps only that)."""
    root = state_root(checkpoint_dir)
    if not root.is_dir():
        return
    current = step_dir(checkpoint_dir, step).name
    for path in root.iterdir():
        if path.name.startswith((".tmp-", ".old-")):
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.startswith("step-") and path.name != current:
            if keep_only_latest or not (Path(checkpoint_dir) / f"{path.name}.ckpt").exists():
                shutil.rmtree(path, ignore_errors=True)


# -- loading -------------------------------------------------------------------------------------------
def load(selector: RaySelector, checkpoint_dir: Path, step: int, camera_sizes: Sequence[Tuple[int, int]],
         run_id: Optional[str]) -> Path:
    """Restore this rank's EVOS state of ``step`` on any world size (a collective). ``run_id`` is the
    nerfstudio checkpoint's (None: not checked). Returns the folder."""
    path = step_dir(checkpoint_dir, step)
    if not path.is_dir():
        raise UserInputError(
            f"no EVOS state for step {step}: {path} is missing (it is written beside nerfstudio_models with "
            "every checkpoint; it was deleted, or the run was saved by an older evos-nerf)"
        )
    metadata = _checked_metadata(path)
    entries = metadata.state_dict_metadata
    no_dist = not distributed.is_distributed()
    missing = [k for k in ("meta/format", "meta/step", "meta/world_size", "meta/camera_sizes", "meta/run_id") if k not in entries]
    if missing:
        raise UserInputError(f"{path} is not an EVOS state folder: it has no {missing[0]}")
    meta = {k: _empty(v) for k, v in entries.items() if k.startswith("meta/")}
    with _quiet():
        dcp.load(meta, storage_reader=dcp.FileSystemReader(path), no_dist=no_dist)
    _check_identity(path, meta, step, camera_sizes, run_id)
    saved_world = int(meta["meta/world_size"][0])
    same_world = saved_world == distributed.get_world_size()
    fresh = selector.sharded_state()  # views of the store: its per-pixel entries load in place
    wanted: Dict[str, Tensor] = {}
    for key, entry in entries.items():
        if key.startswith("meta/") or not selector.wants_key(key, same_world):
            continue
        if key.startswith("visits/") and not selector.store.track_visits:
            continue
        if key.startswith("uniform/") and selector.store.uniform is None:
            continue
        current = fresh.get(key)
        same = current is not None and tuple(current.shape) == tuple(entry.size) and current.dtype == entry.properties.dtype
        wanted[key] = current if same else _empty(entry)
    for camera in selector.store.cameras.tolist():
        for kind in ("fitness", "epoch"):
            if camera_key(kind, camera) not in wanted:
                raise UserInputError(f"EVOS state {path} has no {kind} of training camera {camera}")
    with _quiet():
        dcp.load(wanted, storage_reader=dcp.FileSystemReader(path), no_dist=no_dist)
    selector.load_sharded_state(wanted, same_world)
    if not same_world and distributed.get_rank() == 0:
        console.print(f"EVOS: state written by {saved_world} rank(s), resuming on {distributed.get_world_size()}: "
                      "the fitness state is re-sharded exactly; selection RNG streams restart per rank")
    return path


def read_state(path: Path) -> Dict[str, Tensor]:
    """Every entry of one EVOS state folder, in this process (inspection and tests: it holds all shards)."""
    metadata = _checked_metadata(Path(path))
    state = {k: _empty(v) for k, v in metadata.state_dict_metadata.items()}
    with _quiet():
        dcp.load(state, storage_reader=dcp.FileSystemReader(path), no_dist=True)
    return state


def _empty(entry) -> Tensor:
    return torch.empty(tuple(entry.size), dtype=entry.properties.dtype)


def _checked_metadata(path: Path):
    """DCP metadata of a complete folder, or a one-line error naming what is missing or short."""
    meta_file = path / ".metadata"
    if not meta_file.is_file():
        raise UserInputError(f"incomplete EVOS state {path}: its .metadata is missing (a save was interrupted?)")
    try:
        metadata = dcp.FileSystemReader(path).read_metadata()
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as err:
        raise UserInputError(f"EVOS state {meta_file} is unreadable ({type(err).__name__}): a save was interrupted?") from None
    needed: Dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    for name in sorted(needed):
        file = path / name
        if not file.is_file():
            raise UserInputError(f"incomplete EVOS state: {file} is missing (one rank's shard)")
        size = file.stat().st_size
        if size < needed[name]:
            raise UserInputError(f"incomplete EVOS state: {file} is truncated ({size:,} of {needed[name]:,} bytes)")
    return metadata


def _check_identity(path: Path, meta: Dict[str, Tensor], step: int, camera_sizes: Sequence[Tuple[int, int]],
                    run_id: Optional[str]) -> None:
    if int(meta["meta/format"][0]) != FORMAT:
        raise UserInputError(f"EVOS state {path} has format {int(meta['meta/format'][0])}; this evos-nerf reads {FORMAT}")
    saved_step = int(meta["meta/step"][0])
    if saved_step != step:
        raise UserInputError(f"EVOS state {path} is of step {saved_step}, not of the checkpoint's step {step}")
    saved_sizes: List[List[int]] = meta["meta/camera_sizes"].tolist()
    if saved_sizes != [list(s) for s in camera_sizes]:
        raise UserInputError(
            f"EVOS state {path} was written for other training images ({len(saved_sizes)} cameras) than this "
            f"dataset's ({len(camera_sizes)} cameras, or sizes differ): another dataset or split?"
        )
    saved_run = _untext(meta["meta/run_id"])
    if run_id and saved_run != run_id:
        raise UserInputError(f"EVOS state {path} belongs to another run ({saved_run}) than its step-{step:09d}.ckpt ({run_id})")


# -- the trainer's hooks ------------------------------------------------------------------------------
def save_for_trainer(trainer: "Trainer", step: int) -> None:
    """Every rank, before nerfstudio writes ``step-N.ckpt``."""
    dm = trainer.pipeline.datamanager
    if getattr(dm, "selector", None) is not None:
        save(dm.selector, trainer.checkpoint_dir, step, dm.camera_sizes, dm.run_id)


def finish_for_trainer(trainer: "Trainer", step: int) -> None:
    """Every rank, after nerfstudio wrote ``step-N.ckpt`` (rank 0 only cleans up)."""
    if distributed.get_rank() == 0 and getattr(trainer.pipeline.datamanager, "selector", None) is not None:
        finish_save(trainer.checkpoint_dir, step, trainer.config.save_only_latest_checkpoint)


def load_for_trainer(trainer: "Trainer", checkpoint: Optional[Path] = None) -> None:
    """Every rank, after nerfstudio loaded ``checkpoint`` (default: from ``--load-dir`` /
    ``--load-checkpoint``): the matching EVOS state beside it."""
    config = trainer.config
    if checkpoint is None and config.load_dir is None and config.load_checkpoint is None:
        return
    dm = trainer.pipeline.datamanager
    if getattr(dm, "selector", None) is None:
        return
    if checkpoint is not None:
        checkpoint_dir = Path(checkpoint).parent
    else:
        checkpoint_dir = Path(config.load_dir) if config.load_dir is not None else Path(config.load_checkpoint).parent
    step = trainer._start_step - 1
    load(dm.selector, checkpoint_dir, step, dm.camera_sizes, getattr(dm, "checkpoint_run_id", None))
