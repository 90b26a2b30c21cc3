"""Bad flag values end in one line naming the flag and the value (exit code 2), before any training."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from evos_nerf.image import trainer
from evos_nerf.image.cli import main

FITTER_INIT = trainer.ImageFitter.__init__
TINY = ["--resolution", "16", "--backbone.width", "8", "--iterations", "4", "--log-every", "2"]


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(trainer.ImageFitter, "__init__", refuse)


def fit_error(capsys, *args):
    code = main(["fit", *map(str, args)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    "flags, needles",
    [
        (["--backbone.width", "0"], ["--backbone.width", ">= 1", "got 0"]),
        (["--backbone.depth", "1"], ["--backbone.depth", ">= 2 for siren", "got 1"]),
        (["--backbone.kind", "pemlp", "--backbone.depth", "0"], ["--backbone.depth", ">= 1", "got 0"]),
        (["--backbone.lr", "nan"], ["--backbone.lr", "got nan"]),
        (["--backbone.lr", "-1"], ["--backbone.lr", "positive", "got -1.0"]),
        (["--backbone.lr", "0"], ["--backbone.lr", "got 0.0"]),
        (["--backbone.omega0", "nan"], ["--backbone.omega0", "got nan"]),
        (["--backbone.kind", "hashgrid", "--backbone.num-levels", "0"], ["--backbone.num-levels", "got 0"]),
        (["--backbone.kind", "hashgrid", "--backbone.log2-hashmap-size", "40"], ["--backbone.log2-hashmap-size", "[1, 24]", "got 40"]),
        (["--backbone.features-per-level", "0"], ["--backbone.features-per-level", "got 0"]),
        (["--evos.crossover-lambda", "nan"], ["--evos.crossover-lambda", "finite", "got nan"]),
        (["--evos.cfs-weight", "nan"], ["--evos.cfs-weight", "finite", "got nan"]),
        (["--evos.cfs-weight", "inf"], ["--evos.cfs-weight", "got inf"]),
        (["--evos.cfs-weight", "-1"], ["--evos.cfs-weight", ">= 0", "got -1.0"]),
        (["--evos.ratio", "nan"], ["--evos.ratio", "got nan"]),
        (["--evos.ratio", "1.5"], ["--evos.ratio", "(0, 1]", "got 1.5"]),
        (["--evos.end-mutation", "2"], ["--evos.end-mutation", "[0, 1]", "got 2.0"]),
        (["--evos.init-interval", "0"], ["--evos.init-interval", "got 0"]),
        (["--strategies"], ["--strategies is empty"]),
        (["--resolution", "4"], ["--resolution", "got 4"]),
        (["--resolution", "100000"], ["--resolution", "16384", "got 100000"]),
        (["--iterations", "0"], ["--iterations", "got 0"]),
    ],
)
def test_bad_flag_is_named_with_its_value(capsys, image, tmp_path, flags, needles):
    err = fit_error(capsys, image, *TINY, *flags, "--out", tmp_path / "out")
    for needle in needles:
        assert needle in err, err


def test_evos_ratio_too_small_for_the_image_names_ratio_and_pixel_count(capsys, image, tmp_path):
    # 0.005 x 256 pixels = 1.28, but split into selected + mutants each floors to 0 (was a NaN loss
    # blamed on the learning rate).
    err = fit_error(capsys, image, *TINY, "--strategies", "evos", "--evos.ratio", "0.005", "--out", tmp_path / "o")
    assert "--evos.ratio 0.005" in err and "256 pixels" in err and "--backbone.lr" not in err


def test_small_ratio_is_fine_for_strategies_that_always_train_a_pixel(capsys, image, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer.ImageFitter, "__init__", FITTER_INIT)  # let this one train
    code = main(["fit", str(image), *TINY, "--strategies", "uniform", "--evos.ratio", "0.001", "--out", str(tmp_path / "o")])
    assert code == 0, capsys.readouterr().err


def test_skimage_tuple_dataset_is_refused(capsys, tmp_path):
    err = fit_error(capsys, "skimage:stereo_motorcycle", *TINY, "--out", tmp_path / "out")
    assert "skimage:stereo_motorcycle is not a single image" in err


def test_cli_process_prints_one_line_and_exits_2(tmp_path, image):
    # The real process: one line on stderr even when the message is wider than the terminal.
    proc = subprocess.run(
        [sys.executable, "-m", "evos_nerf.image.cli", "fit", str(image), "--backbone.log2-hashmap-size", "40",
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, env={"COLUMNS": "40", "PATH": ""},
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "--backbone.log2-hashmap-size" in proc.stderr and "got 40" in proc.stderr
