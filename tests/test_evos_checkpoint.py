"""The EVOS state through torch.distributed.checkpoint: exact on any world size, atomic, and loud when wrong.

Selectors on hand-built scenes (no nerfstudio run): one process without a process group, and real
gloo processes for the sharded saves and loads.
"""

import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from evos_nerf.core.selector import RaySelector, SelectorConfig
from evos_nerf.core.sharding import assign_shards
from evos_nerf.core.store import FitnessStore
from evos_nerf.errors import UserInputError
from evos_nerf.nerfstudio import evos_checkpoint

CAMERAS, H, W = 6, 8, 12
SIZES = [(H, W)] * CAMERAS
STEP = 24


def _images():
    return list(torch.rand(CAMERAS, H, W, 3, generator=torch.Generator().manual_seed(1)))


def _selector(cameras, seed=0) -> RaySelector:
    store = FitnessStore([(H, W)] * len(cameras), cameras=cameras, num_cameras=CAMERAS, track_visits=True)
    selector = RaySelector(SelectorConfig(init_interval=10, end_interval=10), store, 24, torch.Generator().manual_seed(seed), 200)
    images = _images()
    selector.initialise([images[c] for c in cameras])
    return selector


def _train(selector: RaySelector, steps: int = STEP + 1) -> None:
    """Errors that depend only on the pixel (camera, y, x): the same scene on any sharding."""
    field = torch.rand(CAMERAS, H, W, generator=torch.Generator().manual_seed(2))
    store = selector.store

    def errors(flat):
        cyx = store.unflatten(flat)
        return field[cyx[:, 0], cyx[:, 1], cyx[:, 2]]

    for step in range(steps):
        selector.maybe_evolve(step, lambda cyx: field[cyx[:, 0], cyx[:, 1], cyx[:, 2]])
        sel = selector.select()
        selector.observe(sel.flat, errors(sel.flat) * 0.97**step, step)


def _per_camera(selector: RaySelector) -> dict:
    """camera -> (fitness, epoch, pool membership, visits) of that camera's pixels."""
    store, out = selector.store, {}
    members = selector.pool.contains(torch.arange(store.num_pixels))
    for local, camera in enumerate(store.cameras.tolist()):
        start, end = store.image_range(local)
        out[camera] = (store.fitness[start:end].clone(), store.epoch[start:end].clone(), members[start:end].clone(),
                       store.visits[start:end].clone())
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for camera in a:
        for name, x, y in zip(("fitness", "epoch", "pool", "visits"), a[camera], b[camera]):
            assert torch.equal(x, y), f"{name} of camera {camera} changed"


@pytest.fixture
def run_dir(tmp_path) -> Path:
    models = tmp_path / "run" / "nerfstudio_models"
    models.mkdir(parents=True)
    return models


def _saved(run_dir: Path) -> RaySelector:
    selector = _selector(list(range(CAMERAS)))
    _train(selector)
    evos_checkpoint.save(selector, run_dir, STEP, SIZES, "run-a")
    return selector


def test_one_process_round_trip_without_a_process_group_is_exact(run_dir):
    original = _saved(run_dir)
    folder = run_dir.parent / "evos_state" / f"step-{STEP:09d}"
    assert sorted(p.name for p in folder.iterdir()) == [".metadata", "__0_0.distcp"]
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["evos_state", "nerfstudio_models"]
    resumed = _selector(list(range(CAMERAS)))
    evos_checkpoint.load(resumed, run_dir, STEP, SIZES, "run-a")
    _assert_same(_per_camera(original), _per_camera(resumed))
    for step in range(STEP + 1, STEP + 4):  # same RNG state: the same rays
        original.maybe_evolve(step)
        resumed.maybe_evolve(step)
        assert torch.equal(original.select().flat, resumed.select().flat)


def test_a_killed_save_leaves_the_previous_state_and_the_next_save_cleans_up(run_dir, monkeypatch):
    selector = _saved(run_dir)
    (run_dir / f"step-{STEP:09d}.ckpt").write_bytes(b"model")
    real_save = evos_checkpoint.dcp.save

    def killed(state, storage_writer, no_dist):
        real_save({"fitness/cam00000": state["fitness/cam00000"]}, storage_writer=storage_writer, no_dist=no_dist)
        (Path(storage_writer.fs.concat_path(storage_writer.path, ".metadata"))).unlink()
        raise KeyboardInterrupt  # killed after writing part of its file

    monkeypatch.setattr(evos_checkpoint.dcp, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        evos_checkpoint.save(selector, run_dir, STEP + 10, SIZES, "run-a")
    monkeypatch.setattr(evos_checkpoint.dcp, "save", real_save)
    root = run_dir.parent / "evos_state"
    assert sorted(p.name for p in root.iterdir()) == [f".tmp-step-{STEP + 10:09d}", f"step-{STEP:09d}"]
    resumed = _selector(list(range(CAMERAS)))
    evos_checkpoint.load(resumed, run_dir, STEP, SIZES, "run-a")  # the previous pair still loads
    _assert_same(_per_camera(selector), _per_camera(resumed))
    evos_checkpoint.save(selector, run_dir, STEP + 20, SIZES, "run-a")
    (run_dir / f"step-{STEP + 20:09d}.ckpt").write_bytes(b"model")
    evos_checkpoint.finish_save(run_dir, STEP + 20, keep_only_latest=False)
    assert sorted(p.name for p in root.iterdir()) == [f"step-{STEP:09d}", f"step-{STEP + 20:09d}"]
    evos_checkpoint.finish_save(run_dir, STEP + 20, keep_only_latest=True)
    assert sorted(p.name for p in root.iterdir()) == [f"step-{STEP + 20:09d}"]


def test_saving_the_same_step_again_replaces_it(run_dir):
    selector = _saved(run_dir)
    _train(selector, 3)
    evos_checkpoint.save(selector, run_dir, STEP, SIZES, "run-a")
    resumed = _selector(list(range(CAMERAS)))
    evos_checkpoint.load(resumed, run_dir, STEP, SIZES, "run-a")
    _assert_same(_per_camera(selector), _per_camera(resumed))
    assert sorted(p.name for p in (run_dir.parent / "evos_state").iterdir()) == [f"step-{STEP:09d}"]


@pytest.mark.parametrize("problem", ["no_folder", "no_metadata", "missing_shard", "truncated_shard", "other_step",
                                     "other_dataset", "other_run"])
def test_a_missing_partial_or_foreign_state_is_a_one_line_error_naming_it(run_dir, problem):
    _saved(run_dir)
    folder = run_dir.parent / "evos_state" / f"step-{STEP:09d}"
    step, sizes, run = STEP, SIZES, "run-a"
    if problem == "no_folder":
        shutil.rmtree(folder)
        expected = f"no EVOS state for step {STEP}: {folder} is missing"
    elif problem == "no_metadata":
        (folder / ".metadata").unlink()
        expected = f"incomplete EVOS state {folder}: its .metadata is missing"
    elif problem == "missing_shard":
        (folder / "__0_0.distcp").unlink()
        expected = f"incomplete EVOS state: {folder / '__0_0.distcp'} is missing"
    elif problem == "truncated_shard":
        shard = folder / "__0_0.distcp"
        shard.write_bytes(shard.read_bytes()[:100])
        expected = f"incomplete EVOS state: {shard} is truncated (100 of"
    elif problem == "other_step":
        shutil.copytree(folder, folder.with_name(f"step-{STEP + 1:09d}"))
        step = STEP + 1
        expected = f"is of step {STEP}, not of the checkpoint's step {STEP + 1}"
    elif problem == "other_dataset":
        sizes = SIZES[:-1] + [(H, W + 1)]
        expected = "was written for other training images"
    else:
        run = "run-b"
        expected = "belongs to another run (run-a) than its step-000000024.ckpt (run-b)"
    with pytest.raises(UserInputError) as err:
        evos_checkpoint.load(_selector(list(range(CAMERAS))), run_dir, step, sizes, run)
    assert expected in str(err.value) and "\n" not in str(err.value)


# -- real gloo processes --------------------------------------------------------------------------------
def _worker(rank: int, world: int, port: int, mode: str, run_dir: str, out) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    selector = _selector(assign_shards([H * W] * CAMERAS, world)[rank], seed=rank)
    if mode == "save":
        _train(selector)
        evos_checkpoint.save(selector, Path(run_dir), STEP, SIZES, "run-a")
    else:
        evos_checkpoint.load(selector, Path(run_dir), STEP, SIZES, "run-a")
    out[rank] = _per_camera(selector)
    dist.barrier()
    dist.destroy_process_group()


def _spawn(world: int, mode: str, run_dir: Path) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(world, port, mode, str(run_dir), out), nprocs=world, join=True)
        merged = {}
        for rank in range(world):
            merged.update(out[rank])
    return merged


def test_two_ranks_save_their_own_shards_and_any_world_size_loads_them_bit_for_bit(run_dir):
    saved = _spawn(2, "save", run_dir)
    folder = run_dir.parent / "evos_state" / f"step-{STEP:09d}"
    assert sorted(p.name for p in folder.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    one = _selector(list(range(CAMERAS)))  # 2 -> 1, in this process, without a process group
    evos_checkpoint.load(one, run_dir, STEP, SIZES, "run-a")
    _assert_same(saved, _per_camera(one))
    _assert_same(saved, _spawn(3, "load", run_dir))  # 2 -> 3
