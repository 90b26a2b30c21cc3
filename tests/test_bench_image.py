"""The image benchmark on images it was not written for: results are checked on other images, so
any folder must run the preset's protocol and never write over the DIV2K report."""

import json

import numpy as np
import pytest
from PIL import Image

from script_modules import load_script


@pytest.fixture
def folder(tmp_path):
    """Three images the presets never named: odd sizes, RGBA, grayscale, out of name order."""
    rng = np.random.default_rng(0)
    out = tmp_path / "mine"
    out.mkdir()
    Image.fromarray(rng.integers(0, 255, (30, 45, 3), dtype=np.uint8)).save(out / "b_wide.png")
    Image.fromarray(rng.integers(0, 255, (40, 24, 4), dtype=np.uint8), mode="RGBA").save(out / "a_tall.png")
    Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8), mode="L").save(out / "c_gray.jpg")
    return out


def test_any_folder_runs_the_presets_protocol_on_its_first_images_under_its_own_report_name(folder, tmp_path):
    bench = load_script("bench_image")
    out = tmp_path / "out"
    bench.main(bench.Args(preset="reference", data=folder, out=out, iterations=3, device="cpu"))
    assert sorted(p.name for p in out.iterdir()) == ["image_reference_mine.json", "image_reference_mine.md"]
    result = json.loads((out / "image_reference_mine.json").read_text())
    runs = result["settings"][0]["runs"]
    assert {(r["image"], r["strategy"]) for r in runs} == {("a_tall", s) for s in ("full", "uniform", "evos")}
    assert all(r["history"][-1]["step"] == 3 for r in runs)
    assert "1 images (a_tall) from `mine`, longer side 256 px" in (out / "image_reference_mine.md").read_text()


def test_the_div2k_folder_keeps_the_presets_report_name_and_takes_its_first_images(tmp_path):
    bench = load_script("bench_image")
    assert bench.report_stem(bench.Args(preset="cpu")) == "image_cpu"
    assert bench.report_stem(bench.Args(preset="cpu", data=tmp_path / "mine")) == "image_cpu_mine"
    listing = [f"{i:02d}.png" for i in range(16)]
    assert bench.preset_images(listing, bench.load_preset("cpu")["images"]) == ["00.png", "01.png"]
    assert bench.preset_images(listing, bench.load_preset("reference")["images"]) == ["00.png"]
    assert bench.preset_images(listing, bench.load_preset("paper")["images"]) == listing


@pytest.mark.parametrize("flags, message", [
    ({"iterations": 0}, r"--iterations must be >= 1 \(got 0\)"),
    ({"max_images": -1}, r"--max-images must be >= 1 \(got -1\)"),
    ({"data": "missing"}, r"--data .*missing: not a folder"),
])
def test_flags_and_folders_the_benchmark_cannot_use_are_refused_before_anything_trains(tmp_path, flags, message):
    bench = load_script("bench_image")
    if "data" in flags:
        flags = {**flags, "data": tmp_path / flags["data"]}
    with pytest.raises(SystemExit, match=message):
        bench.main(bench.Args(**flags, out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_folder_without_images_is_named(tmp_path):
    from evos_nerf.errors import UserInputError

    bench = load_script("bench_image")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="no images .* in directory .*empty"):
        bench.main(bench.Args(data=tmp_path / "empty", out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()
