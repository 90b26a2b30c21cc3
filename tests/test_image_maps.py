"""`evos-image fit --maps`: per-log-step fitness and selection PNGs, a contact sheet and a GIF."""

import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from evos_nerf.image.maps import SelectionMaps

CLI = [sys.executable, "-m", "evos_nerf.image.cli", "fit"]


def test_cli_writes_maps_at_every_log_step_with_a_sheet_and_an_animation(tmp_path):
    image = tmp_path / "stripes.png"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((24, 32, 3)) * 255).astype(np.uint8)).save(image)
    out = tmp_path / "out"
    proc = subprocess.run(CLI + [str(image), "--resolution", "32", "--backbone.width", "16", "--iterations", "30",
                                 "--log-every", "10", "--strategies", "evos", "full", "--maps", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    evos, full = out / "stripes" / "evos" / "maps", out / "stripes" / "full" / "maps"
    steps = ["000010", "000020", "000030"]
    for step in steps:
        for kind in ("selection", "fitness"):
            with Image.open(evos / f"{kind}_{step}.png") as png:
                assert png.size == (32, 24)  # the image's own resolution
    assert not list(full.glob("fitness_*.png"))  # full keeps no fitness
    # Full trains every pixel every step: one colour. EVOS concentrates: many.
    assert len(np.unique(np.asarray(Image.open(full / "selection_000020.png")).reshape(-1, 3), axis=0)) == 1
    assert len(np.unique(np.asarray(Image.open(evos / "selection_000020.png")).reshape(-1, 3), axis=0)) > 1
    with Image.open(evos / "selection.gif") as gif:
        assert gif.n_frames == len(steps)
    assert (evos / "maps_sheet.png").stat().st_size > 5_000


def test_selection_share_is_per_log_interval_not_cumulative(tmp_path):
    maps = SelectionMaps(tmp_path, 2, 2)
    counts = torch.tensor([10, 0, 5, 10], dtype=torch.int32)  # steps 1..10
    maps.record(10, counts, None)
    maps.record(20, counts + torch.tensor([0, 10, 5, 10], dtype=torch.int32), None)  # steps 11..20
    first = np.asarray(Image.open(tmp_path / "maps" / "selection_000010.png"))
    second = np.asarray(Image.open(tmp_path / "maps" / "selection_000020.png"))
    # Pixel 0 was trained every step of the first interval and never in the second; pixel 1 the reverse.
    assert np.array_equal(first[0, 0], second[0, 1]) and np.array_equal(first[0, 1], second[0, 0])
    assert np.array_equal(first[1, 0], second[1, 0])  # half the steps in both
    assert [p.name for p in maps.finish("t")] == ["maps_sheet.png", "selection.gif"]
