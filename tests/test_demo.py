"""`make demo` (evos-nerf-demo): uniform and EVOS on the same budget, side by side, with one plot."""

import json
import math

import matplotlib
import pytest
from PIL import Image

from evos_nerf import demo
from evos_nerf.nerfstudio.presets import Budget

TINY_MODEL = {"num_nerf_samples_per_ray": 16, "num_proposal_samples_per_ray": (24, 16), "log2_hashmap_size": 12,
              "max_res": 128, "hidden_dim": 32, "hidden_dim_color": 32, "eval_num_rays_per_chunk": 2048}


def test_evaluation_steps_are_spread_over_the_budget_and_end_at_the_last_step():
    assert demo.eval_steps(240, 6) == [39, 79, 119, 159, 199, 239]
    assert demo.eval_steps(10, 3) == [2, 6, 9]
    assert demo.eval_steps(3, 10) == [0, 1, 2]


@pytest.mark.slow
def test_demo_trains_uniform_and_evos_on_the_same_budget_and_compares_them(tmp_path, capsys):
    backend = matplotlib.get_backend()
    args = demo.Demo(out=tmp_path / "demo", resolution=32, num_train=8, num_test=2, evals=2,
                     budget=Budget(steps=12, rays=128, model=TINY_MODEL))
    results = demo.run(args)

    assert [r.strategy for r in results] == ["uniform", "evos"]
    for r in results:
        assert [h["step"] for h in r.history] == [6, 12]
        assert all(h["train_seconds"] > 0 and 0 < h["ssim"] <= 1 and math.isfinite(h["psnr"]) for h in r.history)
        assert (r.run_dir / "config.yml").is_file()  # ns-eval / ns-viewer can open either run
        assert list((r.run_dir / "nerfstudio_models").glob("step-000000011.ckpt"))
    printed = " ".join(capsys.readouterr().out.split())
    for row in ("PSNR (dB)", "SSIM", "training time (s)", "uniform", "evos", "12 steps x 128 rays"):
        assert row in printed

    with Image.open(tmp_path / "demo" / "comparison.png") as plot:
        assert plot.format == "PNG" and plot.size[0] > 300
    saved = json.loads((tmp_path / "demo" / "comparison.json").read_text())
    assert saved["budget"] == {"steps": 12, "rays": 128}
    assert saved["runs"]["evos"]["history"] == results[1].history
    assert matplotlib.get_backend() == backend  # the plot did not switch the process's backend
