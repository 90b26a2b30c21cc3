"""The NeRF benchmark's lock-step loop: a run's result must not depend on its place in the list."""

import json
import math

import numpy as np
import pytest
import torch

from evos_nerf.core.neighbourhood import BlockPrior
from evos_nerf.errors import UserInputError
from evos_nerf.nerfstudio.presets import Budget
from evos_nerf.scene import make_scene
from nerf_helpers import as_nerfstudio_data
from script_modules import load_script


@pytest.mark.slow
def test_identical_runs_end_identical_wherever_they_sit_in_the_lock_step_in_turns_or_not_and_whether_train_views_are_scored(tmp_path):
    bench = load_script("bench_nerf")
    scene = make_scene(tmp_path / "scene", resolution=24, num_train=4, num_val=1, num_test=1)
    args = bench.Args(work=tmp_path / "work", out=tmp_path / "out")
    budget = Budget(steps=4, rays=64, model={"num_nerf_samples_per_ray": 8, "num_proposal_samples_per_ray": [8, 8]})
    spec = {"name": "tiny", "source": "procedural"}
    first, other, second = (bench.build(spec, scene, s, 0, budget, args) for s in ("uniform", "evos", "uniform"))
    initial = {k: v.clone() for k, v in _tensors(first).items()}
    for until in (2, 4):
        bench.advance_group([first, other], until, interleave=1)  # first trains in turns with evos...
        with bench.own_rng(second):
            bench.advance(second, until)  # ...second in one go
        for run in (first, other, second):
            with bench.own_rng(run):
                bench.evaluate(run, train_views=2 if run is first else 0)  # the diagnostic must not touch training
    assert [h["psnr"] for h in first.history] == [h["psnr"] for h in second.history]
    assert all(0 < h["train_psnr"] < 100 and 0 < h["train_ssim"] <= 1 for h in first.history)
    assert "train_psnr" not in second.history[0]
    a, b = _tensors(first), _tensors(second)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert any(not torch.equal(a[k], initial[k]) for k in a if a[k].is_floating_point())  # training moved them
    # A pilot's pixel subset applies to the training views too: PSNR on the subset, no SSIM.
    bench.evaluate(first, pixels=50, train_views=2)
    assert 0 < first.history[-1]["train_psnr"] < 100 and first.history[-1]["train_ssim"] != first.history[-1]["train_ssim"]


def _tensors(run):
    return {k: v for k, v in run.trainer.pipeline.model.state_dict().items() if isinstance(v, torch.Tensor)}


def test_merge_combines_part_results_and_skips_their_summaries(tmp_path):
    bench = load_script("bench_nerf")
    parts = bench.ROOT / "benchmarks" / "real_parts"
    files = [parts / "real_fern_s0r.json", parts / "real_fern_s0r_summary.json", parts / "real_fern_s2.json"]
    bench.main(bench.Args(merge=files, name="merged", out=tmp_path))
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert {(r["seed"], r["strategy"]) for r in merged["runs"]} >= {(0, "uniform"), (2, "uniform"), (0, "evos:step")}
    assert (tmp_path / "merged_summary.json").exists() and (tmp_path / "merged.png").exists()
    # Each run names the process (part) that trained it, and a merge of merged files keeps it.
    assert {r["process"] for r in merged["runs"] if r["seed"] == 2} == {str(files[2])}
    bench.main(bench.Args(merge=[tmp_path / "merged.json"], name="again", out=tmp_path))
    again = json.loads((tmp_path / "again.json").read_text())
    assert [r["process"] for r in again["runs"]] == [r["process"] for r in merged["runs"]]
    assert merged["host"] == "not recorded"  # parts written before hosts were recorded say so, not this host
    assert "host not recorded" in (tmp_path / "merged.md").read_text()
    assert "preset `not recorded`" in (tmp_path / "merged.md").read_text()  # parts written before presets were named
    # The torch a part trained with, not the merging machine's (a GPU part merged on this CPU).
    assert merged["torch"] == "not recorded" and "torch not recorded," in (tmp_path / "merged.md").read_text()
    gpu_part = json.loads(files[2].read_text()) | {"torch": "2.11.0+cu130", "host": "GPU host"}
    (tmp_path / "gpu_part.json").write_text(json.dumps(gpu_part))
    bench.main(bench.Args(merge=[files[0], tmp_path / "gpu_part.json"], name="mixed", out=tmp_path))
    assert json.loads((tmp_path / "mixed.json").read_text())["torch"] == "2.11.0+cu130; not recorded"
    assert "torch 2.11.0+cu130; not recorded," in (tmp_path / "mixed.md").read_text()
    with pytest.raises(SystemExit, match="do not name their preset .*give --preset or --name"):
        bench.main(bench.Args(merge=files, out=tmp_path / "unnamed"))
    assert not (tmp_path / "unnamed").exists()
    with pytest.raises(SystemExit, match=r"fern seed 0 uniform is in both .*real_fern_s0r.json and .*merged.json"):
        bench.main(bench.Args(merge=[files[0], tmp_path / "merged.json"], name="twice", out=tmp_path))  # a part and its merge
    assert not (tmp_path / "twice.json").exists()
    (tmp_path / "other.json").write_text('{"rows": []}')
    with pytest.raises(SystemExit, match="other.json is not a bench_nerf result file"):
        bench.main(bench.Args(merge=[tmp_path / "other.json"], name="x", out=tmp_path))


@pytest.mark.slow
def test_a_group_stopped_mid_run_leaves_its_curves_so_far_which_a_merge_refuses(tmp_path, monkeypatch):
    """A GPU lease's deadline stops a group between evaluations: the part keeps what was evaluated,
    marked incomplete, and no report can take its last evaluation for the end of the budget."""
    bench = load_script("bench_nerf")
    real, calls = bench.advance_group, []

    def stop_at_the_second_evaluation(group, until, interleave):
        calls.append(until)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(group, until, interleave)

    monkeypatch.setattr(bench, "advance_group", stop_at_the_second_evaluation)
    args = bench.Args(preset="cpu", scenes=["procedural_100"], seeds=[0], strategies=["uniform"], steps=4, rays=64,
                      evals=2, test_images=1, work=tmp_path / "work", out=tmp_path / "out", name="part")
    with pytest.raises(KeyboardInterrupt):
        bench.main(args)
    part = json.loads((tmp_path / "out" / "part.json").read_text())
    assert part["complete"] is False and [h["step"] for h in part["runs"][0]["history"]] == [2]
    assert "(partial: the run is still going)" in (tmp_path / "out" / "part.md").read_text()
    with pytest.raises(SystemExit, match=r"part.json: procedural_100 seed 0 uniform stopped at step 2 of 4 \(a partial file\)"):
        bench.main(bench.Args(merge=[tmp_path / "out" / "part.json"], name="merged", out=tmp_path / "merged"))
    assert not (tmp_path / "merged").exists()


def test_model_overrides_join_the_presets_model_settings_and_so_the_budget():
    bench = load_script("bench_nerf")
    real = bench.load_preset("real")
    budget = bench.preset_budget(real, model=["log2_hashmap_size=19", "num_proposal_samples_per_ray=[32, 16]"])
    assert budget.model == {**real["model"], "log2_hashmap_size": 19, "num_proposal_samples_per_ray": [32, 16]}
    assert budget != bench.preset_budget(real)  # so --merge never mixes such runs with the preset's
    config = bench.run_config(bench.Path("."), bench.Path("out"), budget, scene_format="nerfstudio")
    assert config.pipeline.model.log2_hashmap_size == 19 and config.pipeline.model.num_proposal_samples_per_ray == (32, 16)


def test_the_benchmark_evaluates_at_three_quarters_of_the_budget_where_the_plateau_is_checked():
    bench = load_script("bench_nerf")
    assert bench.evaluation_steps(1200, 5) == [240, 480, 720, 900, 960, 1200]
    assert bench.evaluation_steps(1200, 4) == [300, 600, 900, 1200]  # already there: once
    assert bench.evaluation_steps(4, 1) == [3, 4]


def test_streams_as_seeds_reports_each_seed_and_stream_as_a_replicate_and_keeps_the_runs_as_trained(tmp_path):
    bench = load_script("bench_nerf")
    files = [bench.ROOT / "benchmarks" / "real_parts" / "real_fox_s2.json",
             bench.ROOT / "benchmarks" / "real_rays" / "real_fox_s2_amdstream1001_rays512.json"]
    bench.main(bench.Args(merge=files, name="pooled", out=tmp_path, streams_as_seeds=True))
    rows = {r["strategy"]: r for r in json.loads((tmp_path / "pooled_summary.json").read_text())}
    assert "evos:step+sel-seed=1001" not in rows and "uniform:sel-seed=1001" not in rows
    assert rows["evos:step"]["seeds"] == ["2", "2/1001"] and rows["errormap"]["seeds"] == ["2"]
    # Each replicate against its own stream's uniform: 0.81x on the default stream, never on 1001
    # (benchmarks/nerf_real_streams_rays512.md), so the median of the two is "never".
    assert rows["evos:step"]["steps_to_uniform_final_median"] is None
    text = (tmp_path / "pooled.md").read_text()
    assert "### fox, seed 2/1001" in text and "Seeds are (seed, selection stream) pairs" in text
    merged = json.loads((tmp_path / "pooled.json").read_text())
    assert merged["streams_as_seeds"] is True
    assert {(r["seed"], r["strategy"]) for r in merged["runs"]} >= {(2, "evos:step"), (2, "evos:step+sel-seed=1001")}


def test_a_merged_report_names_the_preset_its_files_ran(tmp_path):
    bench = load_script("bench_nerf")
    part = json.loads((bench.ROOT / "benchmarks" / "real_parts" / "real_fern_s2.json").read_text())
    for seed, (name, preset) in enumerate((("a", "real"), ("b", "real"), ("c", "cpu"))):
        runs = [{**r, "seed": seed} for r in part["runs"]]  # three seeds' parts
        (tmp_path / f"{name}.json").write_text(json.dumps({**part, "runs": runs, "preset": {**part["preset"], "name": preset}}))
    bench.main(bench.Args(merge=[tmp_path / "a.json", tmp_path / "b.json"], out=tmp_path / "out"))
    # no --name: the stem, the title and the preset's own summary file all follow the files' preset
    assert (tmp_path / "out" / "nerf_real.md").read_text().startswith("# NeRF benchmark, preset `real`")
    assert (tmp_path / "out" / "nerf_real_summary.json").exists()
    with pytest.raises(SystemExit, match=r"different presets: real \(.*a.json\), cpu \(.*c.json\)"):
        bench.main(bench.Args(merge=[tmp_path / "a.json", tmp_path / "c.json"], name="x", out=tmp_path / "out"))
    assert not (tmp_path / "out" / "x.md").exists()


def test_an_unknown_preset_is_refused_with_the_known_ones(tmp_path):
    bench = load_script("bench_nerf")
    with pytest.raises(SystemExit, match=r"--preset reall: no configs/bench_nerf_reall.yaml \(presets: .*real, real_gpu"):
        bench.main(bench.Args(preset="reall", work=tmp_path / "work", out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_host_names_the_cpu_and_the_kernel_isa_torch_dispatches_to():
    bench = load_script("bench_nerf")
    assert bench.host().endswith(", " + torch.backends.cpu.get_cpu_capability())


@pytest.mark.parametrize("flags, message", [
    ({"threads": 0}, r"--threads must be >= 1"),
    ({"train_views": -1}, r"--train-views must be >= 0 \(got -1\)"),
    ({"steps": 0}, r"--steps must be >= 1 \(got 0\)"),  # not silently the preset's budget
    ({"rays": -512}, r"--rays must be >= 1 \(got -512\)"),
    ({"interleave": 0}, r"--interleave must be >= 1 \(got 0\)"),
])
def test_out_of_range_counts_are_refused_before_anything_trains(tmp_path, flags, message):
    bench = load_script("bench_nerf")
    with pytest.raises(SystemExit, match=message):
        bench.main(bench.Args(**flags, work=tmp_path / "work", out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_hard_mining_is_a_fixed_share_on_every_method_and_annealed_only_when_named():
    """evos-nerf's step default is EVOS's annealing; the topk baseline shares EVOS's pool and once
    inherited it silently, which made it EVOS without mutants on real captures."""
    from evos_nerf.nerfstudio.config import evos_nerf_blender_config, evos_nerf_config

    bench = load_script("bench_nerf")
    for make in (evos_nerf_config, evos_nerf_blender_config):
        for name, schedule in (("topk", "constant"), ("topk:step", "step"), ("evos:step", "step"), ("evos:constant", "constant")):
            cfg = make()
            bench.strategy_overrides(name, cfg)
            sampler = cfg.pipeline.datamanager.pixel_sampler
            assert (sampler.strategy, sampler.ratio_schedule) == (name.split(":")[0], schedule), (make.__name__, name)
            # the paper's r0 and alpha, which every recorded part ran, whatever the method's default
            assert (sampler.ratio, sampler.mutation) == (0.5, 0.5), (make.__name__, name)


def test_valued_variants_set_their_sampler_setting_and_unknown_ones_are_refused():
    from evos_nerf.nerfstudio.config import evos_nerf_config

    bench = load_script("bench_nerf")
    cfg = evos_nerf_config()
    bench.strategy_overrides("softmining:sm-alpha=0+sm-uniform=0.5", cfg)
    sampler = cfg.pipeline.datamanager.pixel_sampler
    assert (sampler.strategy, sampler.softmining_alpha, sampler.softmining_uniform) == ("softmining", 0.0, 0.5)
    bench.strategy_overrides("evos:ratio=0.3", cfg)
    assert cfg.pipeline.datamanager.pixel_sampler.ratio == 0.3
    bench.strategy_overrides("evos:constant+mutation=0.25", cfg)
    assert (sampler.ratio_schedule, sampler.mutation) == ("constant", 0.25)
    bench.strategy_overrides("softmining:sm-warmup=60", cfg)  # a step count stays an integer
    assert type(sampler.softmining_warmup) is int and sampler.softmining_warmup == 60
    bench.strategy_overrides("evos:step+interval=20+end-interval=10+refresh=410", cfg)
    assert (sampler.init_interval, sampler.end_interval, sampler.refresh_budget) == (20, 10, 410)
    assert type(sampler.refresh_budget) is int  # its default is None
    bench.strategy_overrides("evos:step+block=32", cfg)
    assert type(sampler.prior_block) is int and sampler.prior_block == 32
    bench.strategy_overrides("evos:step+block=4+levels=3", cfg)
    assert sampler.neighbourhood_prior.sizes == (4, 8, 16)
    fresh = evos_nerf_config()
    bench.strategy_overrides("evos:step+block=8+fitted-prior", fresh)
    assert fresh.pipeline.datamanager.pixel_sampler.neighbourhood_prior == BlockPrior((8,), "fitted")
    upper = evos_nerf_config()
    bench.strategy_overrides("evos:step+fitted-prior+ucb=1", upper)
    assert upper.pipeline.datamanager.pixel_sampler.neighbourhood_prior == BlockPrior((16,), "fitted", 1.0)
    bench.strategy_overrides("evos:step+sel-seed=1001", upper)
    assert upper.pipeline.datamanager.pixel_sampler.seed == 1001  # its default is None
    bench.strategy_overrides("evos:step+live", upper)
    assert upper.pipeline.datamanager.pixel_sampler.mutation_control == "live"
    bench.strategy_overrides("evos:step+trim=0.05", upper)
    assert upper.pipeline.datamanager.pixel_sampler.pool_trim == 0.05
    bench.strategy_overrides("evos:step+trim=0.05+trim-start=0.5", upper)
    assert upper.pipeline.datamanager.pixel_sampler.pool_trim_start == 0.5
    with pytest.raises(ValueError, match="unknown strategy variant 'alpha=0'"):
        bench.strategy_overrides("softmining:alpha=0", evos_nerf_config())
    # Three strategies quoted into one argument: refused, where it used to train uniform under that name.
    with pytest.raises(UserInputError, match="strategy must be one of .*got 'uniform errormap evos'"):
        bench.strategy_overrides("uniform errormap evos:step", evos_nerf_config())
    with pytest.raises(ValueError, match="'sm-uniform=half': 'half' is not a number"):
        bench.strategy_overrides("softmining:sm-uniform=half", evos_nerf_config())


def test_test_images_flag_overrides_a_scenes_own_setting_and_each_views_scores_are_kept(tmp_path):
    bench = load_script("bench_nerf")
    scene = make_scene(tmp_path / "scene", resolution=16, num_train=2, num_val=1, num_test=3)
    budget = Budget(steps=2, rays=32, model={"num_nerf_samples_per_ray": 8, "num_proposal_samples_per_ray": [8, 8]})
    spec = {"name": "tiny", "source": "procedural", "test_images": 1}
    for flag, scored, recorded in ((None, 1, 1), (2, 2, 2), (5, 3, None)):  # None: every test view
        args = bench.Args(work=tmp_path / f"work{flag}", out=tmp_path / "out", test_images=flag)
        run = bench.build(spec, scene, "uniform", 0, budget, args)
        assert len(run.trainer.pipeline.datamanager.fixed_indices_eval_dataloader.image_indices) == scored
        assert run.test_images == recorded
    bench.evaluate(run)  # each view's scores are kept, and the reported ones are their mean
    scores = run.history[-1]
    assert len(scores["view_psnr"]) == len(scores["view_ssim"]) == 3
    assert scores["psnr"] == pytest.approx(sum(scores["view_psnr"]) / 3, rel=1e-6)
    assert scores["ssim"] == pytest.approx(sum(scores["view_ssim"]) / 3, rel=1e-6)
    assert "get_image_metrics_and_images" not in vars(run.trainer.pipeline.model)  # the method is the class's again
    assert all(cc >= psnr - 1e-6 for cc, psnr in zip(scores["view_cc_psnr"], scores["view_psnr"]))
    assert scores["cc_psnr"] == pytest.approx(sum(scores["view_cc_psnr"]) / 3)


def test_colour_corrected_psnr_forgives_an_affine_colour_change_and_nothing_else():
    bench = load_script("bench_nerf")
    gt = torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2
    mix = torch.tensor([[0.9, 0.05, 0.0], [0.0, 1.1, 0.1], [0.05, 0.0, 0.8]])
    darker = (gt - 0.1) @ torch.linalg.inv(mix)  # gt = darker @ mix + 0.1: an exposure / white-balance change
    assert bench.colour_corrected_psnr(darker, gt) > 60
    noisy = gt + 0.05 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(1))
    plain = -10 * math.log10(float(((noisy - gt) ** 2).mean()))
    # Noise is not forgiven, beyond the least-squares fit's shrinkage toward the mean colour, which
    # lowers the error by the signal's share of the variance: 10 log10(1 + noise / signal variance).
    shrinkage = 10 * math.log10(1 + 0.05**2 / (0.6**2 / 12))
    assert plain - 0.05 < bench.colour_corrected_psnr(noisy, gt) < plain + shrinkage + 0.05


def test_a_merge_refuses_a_scene_scored_on_other_views_in_another_file(tmp_path):
    bench = load_script("bench_nerf")
    part = bench.ROOT / "benchmarks" / "real_rays" / "real_fox_s10_amdfresh_rays512.json"
    data = json.loads(part.read_text())
    assert all("test_images" not in r for r in data["runs"])  # written before runs recorded it: the preset's 3
    every = {**data, "runs": [{**r, "seed": 99, "test_images": None} for r in data["runs"]]}
    (tmp_path / "every.json").write_text(json.dumps(every))
    with pytest.raises(SystemExit, match=r"fox was scored on the first 3 test view\(s\) in .*amdfresh_rays512.json "
                                         r"but on every test view in .*every.json"):
        bench.main(bench.Args(merge=[part, tmp_path / "every.json"], name="mixed", out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    three = {**every, "runs": [{**r, "test_images": 3} for r in every["runs"]]}
    (tmp_path / "three.json").write_text(json.dumps(three))
    bench.main(bench.Args(merge=[part, tmp_path / "three.json"], name="same", out=tmp_path / "out"))
    merged = json.loads((tmp_path / "out" / "same.json").read_text())
    assert {r["test_images"] for r in merged["runs"]} == {3}
    assert "Scored on fox: the first 3 test view(s)." in (tmp_path / "out" / "same.md").read_text()


def test_colour_corrected_reports_read_cc_psnr_everywhere_and_refuse_runs_without_it(tmp_path):
    bench = load_script("bench_nerf")
    part = bench.ROOT / "benchmarks" / "real_rays" / "real_fox_s10_amdfresh_rays512.json"
    data = json.loads(part.read_text())
    # Colour correction lifts uniform by 1 dB at every evaluation and the others by nothing.
    lift = {"uniform": 1.0}
    runs = [{**r, "history": [{**h, "cc_psnr": h["psnr"] + lift.get(r["strategy"], 0.0)} for h in r["history"]]}
            for r in data["runs"]]
    (tmp_path / "cc.json").write_text(json.dumps({**data, "runs": runs}))
    bench.main(bench.Args(merge=[tmp_path / "cc.json"], name="cc", out=tmp_path / "out", colour_corrected=True))
    rows = {r["strategy"]: r for r in json.loads((tmp_path / "out" / "cc_summary.json").read_text())}
    finals = {r["strategy"]: r["history"][-1]["psnr"] for r in data["runs"]}
    assert rows["uniform"]["final_psnr_mean"] == pytest.approx(finals["uniform"] + 1.0)
    assert rows["evos:step"]["final_psnr_mean"] == pytest.approx(finals["evos:step"])
    assert rows["evos:step"]["steps_to_uniform_final_median"] is None  # 1 dB short of uniform's now
    assert "PSNR is colour-corrected" in (tmp_path / "out" / "cc.md").read_text()
    merged = json.loads((tmp_path / "out" / "cc.json").read_text())
    assert merged["colour_corrected"] is True and merged["runs"][0]["history"][0]["psnr"] == data["runs"][0]["history"][0]["psnr"]
    with pytest.raises(SystemExit, match=r"fox seed 10 uniform \(.*amdfresh_rays512.json\) has no colour-corrected PSNR"):
        bench.main(bench.Args(merge=[part], name="old", out=tmp_path / "old", colour_corrected=True))
    assert not (tmp_path / "old").exists()


def test_first_views_lets_runs_scored_on_every_view_join_parts_scored_on_the_first_three(tmp_path):
    bench = load_script("bench_nerf")
    parts = bench.ROOT / "benchmarks" / "real_rays"
    three, nine = parts / "real_fox_s12_amdfresh_rays512.json", parts / "real_fox_s12_amdsmus100v9_rays512.json"
    with pytest.raises(SystemExit, match="fox was scored on the first 3 test view"):
        bench.main(bench.Args(merge=[three, nine], name="x", out=tmp_path / "refused"))
    bench.main(bench.Args(merge=[three, nine], name="joined", out=tmp_path / "out", first_views=3))
    joined = {r["strategy"]: r for r in json.loads((tmp_path / "out" / "joined.json").read_text())["runs"]}
    trained = json.loads(nine.read_text())["runs"][0]["history"]
    rescored = joined["softmining:uniform-start=100"]
    assert rescored["test_images"] == 3 and len(rescored["history"][-1]["view_psnr"]) == 3
    assert rescored["history"][-1]["psnr"] == pytest.approx(sum(trained[-1]["view_psnr"][:3]) / 3)
    assert rescored["history"][-1]["ssim"] == pytest.approx(sum(trained[-1]["view_ssim"][:3]) / 3)
    assert joined["uniform"]["history"] == json.loads(three.read_text())["runs"][0]["history"]  # already on 3: as measured
    with pytest.raises(SystemExit, match=r"--first-views 4: fox seed 12 uniform .* has per-view scores for 0 view\(s\) only"):
        bench.main(bench.Args(merge=[three], name="y", out=tmp_path / "none", first_views=4))
    with pytest.raises(SystemExit, match="--first-views must be >= 1"):
        bench.main(bench.Args(merge=[three], name="z", out=tmp_path / "none", first_views=0))
    with pytest.raises(SystemExit, match="--first-views re-reads a --merge's runs"):
        bench.main(bench.Args(first_views=3, out=tmp_path / "none"))
    assert not (tmp_path / "none").exists() and not (tmp_path / "refused").exists()


def test_captures_are_named_by_their_folder_and_their_format_and_image_size_read_off_it(tmp_path):
    bench = load_script("bench_nerf")
    blender = make_scene(tmp_path / "synthetic", resolution=16, num_train=8, num_val=2, num_test=2)
    capture = as_nerfstudio_data(blender, tmp_path / "phone")
    halved = as_nerfstudio_data(blender, tmp_path / "halved")
    (halved / "images_2").mkdir()
    specs = bench.capture_specs([blender, capture, halved])
    assert specs == [{"name": "synthetic", "source": str(blender), "format": "blender"},
                     {"name": "phone", "source": str(capture), "format": "nerfstudio", "downscale": 1},
                     {"name": "halved", "source": str(halved), "format": "nerfstudio", "downscale": 2}]
    real = bench.load_preset("real")
    assert bench.default_stem(real, ["phone", "phone", "fern"]) == "nerf_real_phone"  # never the preset's nerf_real
    assert bench.default_stem(real, ["fern", "fox"]) == "nerf_real"
    assert bench.default_stem({**real, "captures": ["fox"]}, ["fox"]) == "nerf_real_fox"  # one's own "fox"
    assert bench.preset_scenes(real, bench.Args(scenes=["fox"]))[0]["name"] == "fox"


@pytest.mark.parametrize("flags, message", [
    ({"captures": ["missing"]}, r"--captures .*missing: not a folder"),
    ({"captures": ["empty"]}, r"--captures .*empty: neither transforms.json \(nerfstudio-data\) nor transforms_train.json"),
    ({"captures": ["a/scene", "b/scene"]}, r"--captures .*b/scene: a second capture named scene \(after .*a/scene\)"),
    ({"captures": ["a/scene"], "scenes": ["fox"]}, r"--scenes picks among the preset's scenes; with --captures"),
    ({"scenes": ["fxo", "fern"]}, r"--scenes fxo: not in preset real \(its scenes: fern, fox, lego_100; --captures"),
    ({"model": ["log2_hashmap_sise=19"]}, r"--model: unknown model setting 'log2_hashmap_sise' in the budget"),
    ({"model": ["19"]}, r"--model 19: expected KEY=VALUE"),
    ({"model": ["num_proposal_samples_per_ray=[48,"]}, r"--model num_proposal_samples_per_ray=\[48,: '\[48,' is not a value"),
])
def test_captures_and_scenes_the_benchmark_cannot_run_are_refused_before_anything_trains(tmp_path, flags, message):
    bench = load_script("bench_nerf")
    (tmp_path / "empty").mkdir()
    for folder in ("a", "b"):
        make_scene(tmp_path / folder / "scene", resolution=8, num_train=1, num_val=1, num_test=1)
    if "captures" in flags:
        flags = {**flags, "captures": [tmp_path / c for c in flags["captures"]]}
    with pytest.raises(SystemExit, match=message):
        bench.main(bench.Args(preset="real", **flags, work=tmp_path / "work", out=tmp_path / "out"))
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


def test_a_capture_of_ones_own_is_benchmarked_on_every_held_out_view_under_its_own_name(tmp_path):
    bench = load_script("bench_nerf")
    scene = make_scene(tmp_path / "synthetic", resolution=16, num_train=8, num_val=2, num_test=2)
    capture = as_nerfstudio_data(scene, tmp_path / "phone")  # 10 frames; 0 and 8 held out
    out = tmp_path / "out"
    bench.main(bench.Args(preset="real", captures=[capture], steps=2, rays=32, evals=1, seeds=[0],
                          strategies=["uniform", "evos:step"], work=tmp_path / "work", out=out,
                          renders=tmp_path / "renders"))
    result = json.loads((out / "nerf_real_phone.json").read_text())
    kept = np.load(tmp_path / "renders" / "phone_evos:step_s0" / "view2.npz")  # the last evaluation's, per view
    assert kept["rgb"].shape == kept["gt"].shape == (*kept["depth"].shape, 3) and kept["rgb"].dtype == np.uint8
    with pytest.raises(SystemExit, match="--renders: .*renders is not empty"):
        bench.main(bench.Args(preset="real", captures=[capture], steps=2, rays=32, evals=1, seeds=[0],
                              work=tmp_path / "work2", out=tmp_path / "out2", renders=tmp_path / "renders"))
    assert [(r["scene"], r["strategy"], r["test_images"]) for r in result["runs"]] == [
        ("phone", "uniform", None), ("phone", "evos:step", None)]
    assert all(len(r["history"][-1]["view_psnr"]) == 2 for r in result["runs"])
    summary = json.loads((out / "nerf_real_phone_summary.json").read_text())
    assert {(row["scene"], row["strategy"]) for row in summary} == {("phone", "uniform"), ("phone", "evos:step")}
    assert not (out / "nerf_real.json").exists() and not (out / "nerf_real_summary.json").exists()
    assert result["preset"]["captures"] == ["phone"]
    bench.main(bench.Args(merge=[out / "nerf_real_phone.json"], out=tmp_path / "merged"))  # nor does its merge
    assert sorted(p.name for p in (tmp_path / "merged").iterdir()) == [
        "nerf_real_phone.json", "nerf_real_phone.md", "nerf_real_phone.png", "nerf_real_phone_summary.json"]
