"""`evos-image fit` never loses a run: unique folders, no silent overwrite, --out checked before training."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from evos_nerf.image import trainer
from evos_nerf.image.cli import main
from evos_nerf.image.outputs import run_names

TINY = ["--resolution", "16", "--backbone.width", "8", "--iterations", "4", "--log-every", "2"]


def noise_png(path, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(path)
    return path


def fit(capsys, *args):
    code = main(["fit", *map(str, args), *TINY])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def no_training(monkeypatch):
    """Fail loudly if anything gets as far as building a fitter."""

    def refuse(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(trainer.ImageFitter, "__init__", refuse)


def test_images_sharing_a_stem_get_their_own_folders(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    noise_png(images / "photo.png", seed=1)
    noise_png(images / "photo.jpg", seed=2)
    out = tmp_path / "out"
    code, stdout, err = fit(capsys, images, "--strategies", "full", "--out", out)
    assert code == 0, err
    assert "wrote 2 runs" in stdout
    for name in ("photo.jpg", "photo.png"):
        metrics = json.loads((out / name / "full" / "metrics.json").read_text())
        assert metrics["image"] == name
    assert sorted(p.name for p in out.iterdir()) == ["photo.jpg", "photo.png"]


def test_run_names_are_unique_even_case_insensitively():
    sources = ["d/photo.png", "d/photo.jpg", "d/Photo.tif", "d/photo.png.jpg", "d/other.png"]
    names = run_names(sources)
    assert names == ["photo.png", "photo.jpg", "Photo.tif", "photo.png-2", "other"]
    assert len({n.casefold() for n in names}) == len(names)
    assert run_names(["skimage:astronaut"]) == ["astronaut"]


def test_duplicate_strategies_are_refused_before_training(tmp_path, capsys, no_training):
    code, _, err = fit(capsys, noise_png(tmp_path / "a.png"), "--strategies", "evos", "evos", "--out", tmp_path / "o")
    assert code == 2 and err.startswith("error: --strategies lists evos 2 times"), err


def test_rerun_into_a_folder_with_results_is_refused_and_leaves_it_alone(tmp_path, capsys):
    image, out = noise_png(tmp_path / "a.png"), tmp_path / "out"
    assert fit(capsys, image, "--strategies", "full", "--out", out)[0] == 0
    before = (out / "a" / "full" / "metrics.json").read_bytes()
    code, _, err = fit(capsys, image, "--strategies", "uniform", "--out", out)
    assert code == 2
    assert err.count("\n") == 1 and str(out / "a") in err and "--overwrite" in err
    assert sorted(p.name for p in (out / "a").iterdir()) == ["full", "psnr_vs_time.png"]
    assert (out / "a" / "full" / "metrics.json").read_bytes() == before


def test_overwrite_replaces_the_image_folder_without_stale_strategies(tmp_path, capsys):
    image, out = noise_png(tmp_path / "a.png"), tmp_path / "out"
    assert fit(capsys, image, "--strategies", "full", "evos", "--out", out)[0] == 0
    code, _, err = fit(capsys, image, "--strategies", "uniform", "--out", out, "--overwrite")
    assert code == 0, err
    assert sorted(p.name for p in (out / "a").iterdir()) == ["psnr_vs_time.png", "uniform"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging or replaced folder left


def test_failed_overwrite_keeps_the_previous_results(tmp_path, capsys):
    image, out = noise_png(tmp_path / "a.png"), tmp_path / "out"
    assert fit(capsys, image, "--strategies", "full", "--out", out)[0] == 0
    code, _, err = fit(capsys, image, "--strategies", "uniform", "--backbone.lr", "1e30", "--out", out, "--overwrite")
    assert code == 1 and "loss became" in err
    assert sorted(p.name for p in (out / "a").iterdir()) == ["full", "psnr_vs_time.png"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_other_images_can_share_an_out_folder(tmp_path, capsys):
    out = tmp_path / "out"
    assert fit(capsys, noise_png(tmp_path / "a.png"), "--strategies", "full", "--out", out)[0] == 0
    assert fit(capsys, noise_png(tmp_path / "b.png"), "--strategies", "full", "--out", out)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"]


def test_empty_leftover_image_folder_does_not_block_a_run(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    assert fit(capsys, noise_png(tmp_path / "a.png"), "--strategies", "full", "--out", out)[0] == 0
    assert (out / "a" / "full" / "metrics.json").is_file()


@pytest.mark.parametrize("layout", ["out_is_a_file", "parent_is_a_file"])
def test_unwritable_out_is_caught_before_training(tmp_path, capsys, no_training, layout):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    out = blocker if layout == "out_is_a_file" else blocker / "out"
    code, _, err = fit(capsys, noise_png(tmp_path / "a.png"), "--strategies", "full", "--out", out)
    assert code == 2, err
    assert err.startswith(f"error: --out {out} ") and err.count("\n") == 1


def test_staging_folder_of_a_killed_fit_is_removed_by_the_next(tmp_path, capsys):
    out = tmp_path / "out"
    dead_pid = 2**22 + 12345  # above Linux's pid_max: no such process
    stale = out / f".partial-{dead_pid}-a"
    (stale / "full").mkdir(parents=True)
    assert fit(capsys, noise_png(tmp_path / "a.png"), "--strategies", "full", "--out", out)[0] == 0
    assert not stale.exists()
    live = out / f".partial-{os.getppid()}-b"  # a running process's staging folder is left alone
    live.mkdir()
    assert fit(capsys, noise_png(tmp_path / "c.png"), "--strategies", "full", "--out", out)[0] == 0
    assert live.exists()
