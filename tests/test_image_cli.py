"""The CLI as a user runs it: one-line errors for bad input, outputs on disk for good input."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

CLI = [sys.executable, "-m", "evos_nerf.image.cli", "fit"]
TINY = ["--resolution", "24", "--backbone.width", "16", "--iterations", "20", "--log-every", "10"]


def run(args, tmp_path):
    return subprocess.run(CLI + [str(a) for a in args] + ["--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)


def assert_one_line_error(proc, code, *needles):
    assert proc.returncode == code, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    message = " ".join(proc.stderr.split())
    assert message.startswith("error:")
    for needle in needles:
        assert needle in message, message


def test_missing_file_is_named(tmp_path):
    assert_one_line_error(run([tmp_path / "nope.png"], tmp_path), 2, "not found", "nope.png")


def test_corrupt_image_is_named(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    assert_one_line_error(run([bad], tmp_path), 2, "bad.png")


def test_truncated_image_is_named(tmp_path):
    good = tmp_path / "cut.png"
    Image.fromarray((np.random.rand(64, 64, 3) * 255).astype(np.uint8)).save(good)
    good.write_bytes(good.read_bytes()[:200])
    assert_one_line_error(run([good], tmp_path), 2, "cut.png")


def test_empty_directory_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run([tmp_path / "empty"], tmp_path), 2, "no images")


@pytest.mark.parametrize("flag,value", [("--evos.ratio", "0"), ("--evos.ratio", "1.5"), ("--evos.init-mutation", "2")])
def test_out_of_range_ratio_is_named(tmp_path, flag, value):
    assert_one_line_error(run(["skimage:astronaut", flag, value, *TINY], tmp_path), 2, value)


def test_nan_loss_is_reported_with_its_step(tmp_path):
    proc = run(["skimage:astronaut", "--backbone.lr", "1e30", "--strategies", "full", *TINY], tmp_path)
    assert_one_line_error(proc, 1, "loss became", "at step")


CONVERSION_NOTE = {
    "L": "grayscale expanded to RGB",
    "RGBA": "RGBA composited on white",
    "LA": "gray+alpha composited on white",
    "P": "P image converted to",
    "I;16": "16-bit values scaled to [0, 1]",
}


@pytest.mark.parametrize("mode", list(CONVERSION_NOTE))
def test_grayscale_and_alpha_images_are_converted_and_fit(tmp_path, mode):
    rng = np.random.default_rng(0)
    if mode == "I;16":
        img = Image.fromarray((rng.random((32, 32)) * 65535).astype(np.uint16))
    else:
        img = Image.fromarray((rng.random((32, 32, 4)) * 255).astype(np.uint8), "RGBA").convert(mode)
    path = tmp_path / f"img_{mode.replace(';', '')}.png"
    img.save(path)
    proc = run([path, "--strategies", "evos", *TINY], tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "out" / path.stem / "evos"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert math.isfinite(metrics["final"]["psnr"])
    assert CONVERSION_NOTE[mode] in metrics["input_note"]  # the conversion itself, not only the resize
    with Image.open(run_dir / "reconstruction.png") as rec:
        assert rec.size == (24, 24) and rec.mode == "RGB"


def test_fit_writes_metrics_reconstruction_heatmap_and_plot(tmp_path):
    proc = run(["skimage:astronaut", "--strategies", "evos", "full", *TINY], tmp_path)
    assert proc.returncode == 0, proc.stderr
    base = tmp_path / "out" / "astronaut"
    assert (base / "psnr_vs_time.png").is_file()
    for strategy in ("evos", "full"):
        metrics = json.loads((base / strategy / "metrics.json").read_text())
        assert metrics["final"]["lpips"] is None and "unavailable" in metrics["final"]["lpips_note"]
        assert [e["step"] for e in metrics["history"]] == [10, 20]
        assert all(e["time_per_iter"] > 0 for e in metrics["history"])
        assert metrics["implementation"] == "torch"
        with Image.open(base / strategy / "reconstruction.png") as rec:
            assert rec.size == (24, 24)
        assert (base / strategy / "heatmap.png").stat().st_size > 1000
    assert not list(base.rglob("*.tmp*"))
