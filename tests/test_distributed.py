"""torchrun + gloo on CPU, real processes, through the launcher users run (evos_nerf.train)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from evos_nerf.nerfstudio import compat  # noqa: F401  (numpy scalars in nerfstudio checkpoints)
from evos_nerf.nerfstudio.evos_checkpoint import read_state
from evos_nerf.scene import make_scene
from nerf_helpers import train_args

pytestmark = pytest.mark.slow
TORCHRUN = str(Path(sys.executable).parent / "torchrun")
NO_TERMINAL_LOG = ["--logging.local-writer.enable", "False"]
"""nerfstudio's terminal writer crashes on a zero-step run (no step recorded); resumes train 0 steps."""


def launch(ranks: int, args, cwd: Path, timeout: int = 600, log: Path = None):
    """Run torchrun to completion, or start it in the background writing to ``log``."""
    cmd = [TORCHRUN, "--standalone", "--nproc-per-node", str(ranks), "-m", "evos_nerf.train", *args]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    if log is not None:
        return subprocess.Popen(cmd, cwd=cwd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def run_dir(out: Path) -> Path:
    return out / "tiny" / "evos-nerf-blender" / "run"


def evos_state(out: Path) -> Path:
    """The run's one EVOS state folder (only the latest is kept)."""
    (folder,) = sorted((run_dir(out) / "evos_state").iterdir())
    return folder


def fitness_state(out: Path) -> dict:
    """The per-camera fitness state (fitness, epochs, pool bits) of the run's EVOS checkpoint."""
    state = read_state(evos_state(out))
    return {k: v for k, v in state.items() if k.split("/")[0] in ("fitness", "epoch", "pool")}


def assert_same_fitness_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"'{key}' changed across the resume"


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return make_scene(tmp_path_factory.mktemp("dist") / "tiny", resolution=32, num_train=8, num_val=2, num_test=2)


@pytest.fixture(scope="module")
def two_rank_run(scene, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two_ranks")
    result = launch(2, train_args(scene, out, 24, ["--collective-timeout-s", "120"]), cwd=out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def test_two_ranks_train_in_sync_on_disjoint_shards_that_cover_every_pixel(two_rank_run):
    reports = [json.loads((run_dir(two_rank_run) / "distributed" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[0]["parameter_checksum"] == reports[1]["parameter_checksum"]
    shards = [set(r["shard_cameras"]) for r in reports]
    assert not shards[0] & shards[1]
    assert shards[0] | shards[1] == set(range(8))
    assert sum(r["shard_pixels"] for r in reports) == 8 * 32 * 32
    assert all(r["batch_sizes"] == [128] for r in reports)
    (ckpt,) = sorted((run_dir(two_rank_run) / "nerfstudio_models").glob("step-*.ckpt"))
    pipeline = torch.load(ckpt, map_location="cpu", weights_only=False)["pipeline"]
    assert not [k for k in pipeline if k.startswith("datamanager.selector")]  # the model and optimizers only
    folder = evos_state(two_rank_run)
    assert folder.name == ckpt.stem
    assert sorted(p.name for p in folder.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]  # one per rank
    state = read_state(folder)
    assert sum(state[f"fitness/cam{c:05d}"].numel() for c in range(8)) == 8 * 32 * 32
    assert sum(int(state[f"visits/cam{c:05d}"].sum()) for c in range(8)) == 2 * 24 * 128  # every trained ray
    assert {k for k in state if k.startswith("generator/")} == {"generator/rank0", "generator/rank1"}


def test_resume_on_any_world_size_round_trips_the_fitness_state_bit_for_bit(two_rank_run, scene, tmp_path):
    original = fitness_state(two_rank_run)
    source = str(run_dir(two_rank_run) / "nerfstudio_models")
    # 2 -> 1 and 2 -> 3 at once: load the sharded run's EVOS state, train no steps, save again.
    one, three = tmp_path / "one", tmp_path / "three"
    logs = [tmp_path / "one.log", tmp_path / "three.log"]
    procs = [launch(ranks, train_args(scene, out, 0, [*NO_TERMINAL_LOG, "--load-dir", source]), cwd=tmp_path, log=log)
             for ranks, out, log in ((1, one, logs[0]), (3, three, logs[1]))]
    for proc, log in zip(procs, logs):
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    assert "state written by 2 rank(s), resuming on 3" in " ".join(logs[1].read_text().split())
    assert_same_fitness_state(original, fitness_state(one))
    assert_same_fitness_state(original, fitness_state(three))
    assert len(list(evos_state(three).glob("*.distcp"))) == 3
    # 1 -> 2: shard the one-process state again.
    two = tmp_path / "two"
    result = launch(2, train_args(scene, two, 0, [*NO_TERMINAL_LOG, "--load-dir", str(run_dir(one) / "nerfstudio_models")]),
                    cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert_same_fitness_state(original, fitness_state(two))


def test_a_missing_shard_stops_the_resume_with_a_message_naming_it(two_rank_run, scene, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(run_dir(two_rank_run), run_dir(broken))
    shard = evos_state(broken) / "__1_0.distcp"
    shard.unlink()
    result = launch(2, train_args(scene, tmp_path / "out", 0, [*NO_TERMINAL_LOG, "--load-dir",
                                                                str(run_dir(broken) / "nerfstudio_models")]), cwd=tmp_path)
    assert result.returncode != 0
    assert f"incomplete EVOS state: {shard} is missing" in " ".join((result.stdout + result.stderr).split())


def test_a_stalled_rank_stops_the_job_with_a_clear_error(scene, tmp_path):
    log = tmp_path / "torchrun.log"
    proc = launch(2, train_args(scene, tmp_path / "out", 100000, ["--collective-timeout-s", "15"]), cwd=tmp_path, log=log)
    try:
        deadline = time.monotonic() + 240
        while "Step (% Done)" not in log.read_text() and time.monotonic() < deadline:  # training started
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(2)
        found = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
        workers = sorted(int(p) for p in found.stdout.split())
        assert len(workers) == 2, f"expected 2 worker processes under torchrun, found {workers}"
        os.kill(workers[-1], signal.SIGSTOP)  # a rank that hangs without dying
        start = time.monotonic()
        proc.wait(timeout=240)
        waited = time.monotonic() - start
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    output = log.read_text()
    assert proc.returncode != 0
    lines = output.splitlines()  # one line, whatever the terminal's width (rich once wrapped it mid-sentence)
    assert any(line.startswith("error: rank ") and "Another rank has died or has not answered for 15 s" in line
               for line in lines), output[-3000:]
    assert waited < 200
