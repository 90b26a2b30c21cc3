"""The benchmark report: every EVOS row is judged against uniform and the best baseline, and shorter budgets against uniform at the full one."""

import json

import pytest

from script_modules import load_script


def _row(strategy, ratios, psnr, ssim):
    return {"scene": "s", "strategy": strategy, "ratio": ratios, "plateau_rise": [0.1], "plateau_interpolated": [False],
            "psnr_equal_time": [psnr],
            "ssim_equal_time": [ssim], "overhead": [0.01], "refresh": [0.005]}


def test_a_plateau_read_between_evaluations_is_said_to_be_interpolated():
    """lego_100 seed 11 (benchmarks/real_rays): interpolated between 720 and 960 its rise read +0.23 dB, measured +0.15."""
    report = load_script("nerf_report")
    chord = [{"step": s, "psnr": p} for s, p in ((720, 24.59), (960, 24.86), (1200, 25.02))]
    measured = sorted(chord + [{"step": 900, "psnr": 24.87}], key=lambda h: h["step"])
    assert report.plateau_rise(chord) == pytest.approx(0.2275) and report.plateau_rise(measured) == pytest.approx(0.15)
    assert report.plateau_read_between_evaluations(chord) and not report.plateau_read_between_evaluations(measured)
    summary = {"s|uniform": {**_row("uniform", [1.0, 1.0], 20.0, 0.5), "plateau_rise": [0.2275, 0.15],
                             "plateau_interpolated": [True, False]}, "s|evos:step": _row("evos:step", [0.6], 20.4, 0.51)}
    assert ("uniform plateau: PSNR rose +0.23 dB over the last quarter (max over seeds; converged if < 0.2 dB: NO; "
            "interpolated between evaluations on 1 of 2 seeds, off by up to 0.08 dB where measured)") in "\n".join(report.checks(summary))


def test_checks_judge_every_evos_row_against_uniform_and_the_fastest_baseline():
    report = load_script("nerf_report")
    summary = {f"s|{r['strategy']}": r for r in (
        _row("uniform", [1.0], 20.0, 0.50),
        _row("errormap", [0.8], 20.2, 0.49),
        _row("topk", [None], 19.0, 0.40),
        _row("evos:constant", [0.6], 20.1, 0.49),
        _row("evos:step", [None], 20.3, 0.51),
    )}
    text = "\n".join(report.checks(summary))
    assert "evos:constant reaches uniform's final PSNR in 0.60x" in text
    assert "vs the best baseline (errormap, 0.80x of uniform's time): +25% sooner (target >= 15%: met)" in text
    assert "evos:step does not reach uniform's final PSNR on the median seed." in text
    assert "it is worse than uniform in SSIM" in text  # evos:constant: 0.49 < 0.50
    assert "it is not worse than uniform in PSNR or SSIM" in text  # evos:step
    assert "overhead 1.50%" in text
    # slower than the best baseline reads as later, not as a negative "sooner"
    summary["s|topk"] = _row("topk", [0.4], 20.5, 0.45)
    text = "\n".join(report.checks(summary))
    assert "vs the best baseline (topk, 0.40x of uniform's time): 50% later (target >= 15%: missed)" in text


def test_a_part_run_on_one_selection_stream_only_is_still_checked_against_uniform_on_that_stream():
    """The GPU check runs ``uniform:sel-seed=N`` against ``evos:step+sel-seed=N`` with no default-stream
    uniform; its report used to print an empty Checks section."""
    report = load_script("nerf_report")
    summary = {f"s|{r['strategy']}": r for r in (
        {**_row("uniform:sel-seed=7", [1.0], 20.0, 0.50), "plateau_rise": [0.15]},
        _row("evos:step+sel-seed=7", [0.6], 20.4, 0.51),
    )}
    text = "\n".join(report.checks(summary))
    assert "uniform plateau: PSNR rose +0.15 dB" in text
    assert "evos:step+sel-seed=7 reaches uniform's final PSNR in 0.60x" in text
    assert "it is not worse than uniform in PSNR or SSIM" in text


def test_the_plateau_is_measured_only_with_an_evaluation_by_three_quarters_of_the_budget():
    """One evaluation at the end (``--evals 1``) used to read as a rise of 0 dB: "converged: yes"."""
    report = load_script("nerf_report")
    curve = [{"step": s, "psnr": p} for s, p in ((400, 20.0), (800, 21.0), (1200, 21.3))]
    assert report.plateau_rise(curve) == pytest.approx(0.225)  # 21.3 against 21.075, interpolated at step 900
    assert report.plateau_rise(curve[-1:]) != report.plateau_rise(curve[-1:])  # nan: nothing to compare with
    summary = {f"s|{r['strategy']}": r for r in (
        {**_row("uniform", [1.0], 20.0, 0.50), "plateau_rise": [0.05, float("nan")], "plateau_interpolated": [False, True]},
        _row("evos:step", [0.6], 20.4, 0.51))}
    text = "\n".join(report.checks(summary))
    assert "uniform plateau: not measured (no evaluation by three quarters of the budget)" in text
    assert "converged" not in text
    assert report.largest_rise(summary["s|uniform"]["plateau_rise"]) is None
    assert report.largest_rise([0.05, 0.12]) == 0.12


def test_the_plot_is_a_small_palette_png_that_keeps_each_strategy_s_colour(tmp_path):
    report = load_script("nerf_report")
    history = [{"step": s, "train_seconds": s / 10, "psnr": 20 + s / 100, "ssim": 0.5 + s / 1e4} for s in (100, 200, 300)]
    runs = [report.MeasuredRun("fern", name, 0, history) for name in ("uniform", "evos:step")]
    report.plot(runs, tmp_path / "curves.png", "t")
    from PIL import Image

    with Image.open(tmp_path / "curves.png") as image:
        assert image.mode == "P"
        colours = {tuple(c) for _, c in image.convert("RGB").getcolors(maxcolors=256)}
    for c0 in ((31, 119, 180), (255, 127, 14)):  # matplotlib's C0 and C1, one per strategy
        assert min(sum(abs(a - b) for a, b in zip(c, c0)) for c in colours) <= 24


def test_a_row_that_ran_fewer_seeds_is_compared_with_uniform_on_those_seeds_only():
    report = load_script("nerf_report")
    uniform = {**_row("uniform", [1.0, 1.0], 20.0, 0.50), "seeds": [0, 1], "psnr_equal_time": [20.0, 22.0],
               "ssim_equal_time": [0.50, 0.60], "plateau_rise": [0.1, 0.1],
               "plateau_interpolated": [False, False]}
    mine = {**_row("evos:step", [0.7], 20.5, 0.51), "seeds": [0]}  # beats seed 0, below the mean of both
    text = "\n".join(report.checks({"s|uniform": uniform, "s|evos:step": mine}))
    assert "not worse than uniform in PSNR or SSIM (20.50 vs 20.00 dB, 0.510 vs 0.500, on the 1 seed(s) it ran)" in text


def test_evos_is_measured_against_a_baseline_on_the_seeds_both_ran():
    report = load_script("nerf_report")
    uniform = {**_row("uniform", [1.0] * 3, 20.0, 0.50), "seeds": [0, 1, 2]}
    mine = {**_row("evos:step", [0.9, 0.6, 0.5], 20.1, 0.51), "seeds": [0, 1, 2]}  # median 0.6 over all three
    errormap = {**_row("errormap", [0.8, 0.7], 20.0, 0.50), "seeds": [0, 1]}  # median 0.75; EVOS 0.75 there too
    text = "\n".join(report.checks({f"s|{r['strategy']}": r for r in (uniform, mine, errormap)}))
    assert "evos:step reaches uniform's final PSNR in 0.60x" in text
    assert ("vs the best baseline (errormap, 0.75x of uniform's time on the 2 seed(s) both ran; evos:step 0.75x there): "
            "+0% sooner (target >= 15%: missed)") in text
    # how far other seeds could move either median: resampled, each pair of seeds gives 0.75 or one of its two values
    assert "95% bootstrap intervals of the two medians over these seeds: evos:step 0.60x to 0.90x; errormap 0.70x to 0.80x." in text
    # 0.5x over all three seeds, but "never" (the median of never and 0.4x) on the two the baseline ran
    text = "\n".join(report.checks({"s|uniform": uniform, "s|evos:step": {**mine, "ratio": [None, 0.4, 0.5]},
                                     "s|errormap": errormap}))
    assert "reaches uniform's final PSNR in 0.50x" in text and "never reaches uniform's final there" in text
    nobody = {**errormap, "ratio": [None, None]}
    text = "\n".join(report.checks({"s|uniform": uniform, "s|evos:step": mine, "s|errormap": nobody}))
    assert "baselines reaching uniform's final: none (target >= 15%: met, no baseline's median reaches it)." in text


def _run(report, scene, strategy, seed, step, psnr, ssim, seconds):
    return report.MeasuredRun(scene, strategy, seed, [{"step": step, "train_seconds": seconds, "psnr": psnr, "ssim": ssim}])


def _timed_run(report, strategy, process, seconds, psnr_at):
    """Evaluated at steps 500 and 1000 of a 1000-step run that took ``seconds``, in ``process``."""
    history = [{"step": s, "train_seconds": seconds * s / 1000, "psnr": p, "ssim": 0.5,
                "selection_seconds": 0.0, "refresh_seconds": 0.0} for s, p in zip((500, 1000), psnr_at)]
    return report.MeasuredRun("s", strategy, 0, history, process)


def test_times_of_runs_from_other_processes_are_not_compared_and_steps_are_instead():
    """A baseline trained alone on a quiet machine looks 'slower' or 'faster' by the load, not the sampler."""
    report = load_script("nerf_report")

    def run(*args):  # uniform ends at 20.0 dB after 1000 steps
        return _timed_run(report, *args)

    group = [run("uniform", "group.json", 100.0, (19.0, 20.0)), run("evos:step", "group.json", 100.0, (20.0, 20.5))]
    alone = run("errormap", "alone.json", 300.0, (20.0, 20.5))  # same steps to 20 dB, three times the seconds
    together = "\n".join(report.checks(report.summarise(group + [run("errormap", "group.json", 100.0, (19.5, 20.5))])))
    assert "uniform's time (median)." in together and "of uniform's time)" in together
    mixed = "\n".join(report.checks(report.summarise(group + [alone])))
    assert "evos:step reaches uniform's final PSNR in 0.50x uniform's steps (median) (by steps:" in mixed
    assert "vs the best baseline (errormap, 0.50x of uniform's steps): +0% sooner (target >= 15%: missed)" in mixed
    assert "equal training time (not comparable" not in mixed  # evos:step itself trained with uniform


def test_a_run_on_another_selection_stream_is_measured_against_uniform_on_that_stream():
    report = load_script("nerf_report")
    runs = [_timed_run(report, "uniform", "a.json", 100.0, (19.0, 20.0)),
            _timed_run(report, "evos:step", "a.json", 100.0, (20.0, 20.5)),
            _timed_run(report, "uniform:sel-seed=7", "b.json", 100.0, (19.5, 21.0)),  # a luckier stream
            _timed_run(report, "evos:step+sel-seed=7", "b.json", 100.0, (20.0, 21.5))]
    summary = report.summarise(runs)
    assert summary["s|evos:step"]["step_ratio"] == [pytest.approx(0.5)]  # 20 dB at step 500
    # Its stream's uniform ends at 21 dB, reached two thirds of the way from step 500 to 1000 (20 dB at 500).
    assert summary["s|evos:step+sel-seed=7"]["step_ratio"] == [pytest.approx((500 + 500 * 1.0 / 1.5) / 1000)]
    assert summary["s|uniform:sel-seed=7"]["step_ratio"] == [pytest.approx(1.0)]


def test_a_part_run_on_one_selection_stream_alone_is_timed_against_uniform_on_that_stream():
    """The GPU check's part has no default-stream uniform: its runs trained in one process with
    uniform on their stream, so their times compare and the checks must not say otherwise."""
    report = load_script("nerf_report")
    runs = [_timed_run(report, "uniform:sel-seed=7", "part.json", 100.0, (19.0, 20.0)),
            _timed_run(report, "evos:step+sel-seed=7", "part.json", 100.0, (20.0, 20.5))]
    summary = report.summarise(runs)
    assert summary["s|evos:step+sel-seed=7"]["timed_with_uniform"] == [True]
    text = "\n".join(report.checks(summary))
    assert "evos:step+sel-seed=7 reaches uniform's final PSNR in 0.50x uniform's time (median)" in text
    assert "by steps" not in text and "not comparable" not in text
    later = [*runs[:1], _timed_run(report, "evos:step+sel-seed=7", "later.json", 300.0, (20.0, 20.5))]
    assert report.summarise(later)["s|evos:step+sel-seed=7"]["timed_with_uniform"] == [False]


def test_streams_as_seeds_takes_the_stream_out_of_the_name_and_into_the_seed():
    report = load_script("nerf_report")
    assert report.split_stream("evos:step+sel-seed=7+block=8") == ("evos:step+block=8", "7")
    assert report.split_stream("uniform:sel-seed=7") == ("uniform", "7")
    assert report.split_stream("evos:step") == ("evos:step", None)
    runs = [_timed_run(report, name, "a.json", 100.0, (19.0, 20.0))
            for name in ("uniform", "evos:step", "uniform:sel-seed=7", "evos:step+sel-seed=7")]
    assert [(r.strategy, r.seed) for r in report.streams_as_seeds(runs)] == [
        ("uniform", "0"), ("evos:step", "0"), ("uniform", "0/7"), ("evos:step", "0/7")]
    with pytest.raises(SystemExit, match="s seed 0/7 has two runs named evos:step .*evos:sel-seed=7\\+step"):
        report.streams_as_seeds(runs + [_timed_run(report, "evos:sel-seed=7+step", "a.json", 100.0, (19.0, 20.0))])


def test_paired_differences_give_the_mean_its_t_interval_and_count_the_pairs_at_or_above_uniform():
    report = load_script("nerf_report")
    mean, low, high = report.mean_interval([0.1, 0.3, 0.2])  # sd 0.1, t(0.975, 2) = 4.3027
    assert (mean, low, high) == pytest.approx((0.2, 0.2 - 4.302653 * 0.1 / 3 ** 0.5, 0.2 + 4.302653 * 0.1 / 3 ** 0.5))
    assert report.mean_interval([0.5]) == (0.5, None, None)
    runs = []
    for seed, (d_psnr, d_ssim) in enumerate(((0.1, -0.01), (0.3, 0.0), (0.2, 0.01))):
        runs += [_run(report, "s", "uniform", seed, 1000, 20.0, 0.5, 100.0),
                 _run(report, "s", "evos:step", seed, 1000, 20.0 + d_psnr, 0.5 + d_ssim, 100.0)]
    # another stream of seed 0 pairs with uniform on that stream, not with the default one
    runs += [_run(report, "s", "uniform:sel-seed=7", 0, 1000, 21.0, 0.6, 100.0),
             _run(report, "s", "evos:step+sel-seed=7", 0, 1000, 20.9, 0.6, 100.0)]
    text = "\n".join(report.paired_with_uniform(runs))
    assert "| s | evos:step | 3 | +0.20 [-0.05, +0.45] | 3/3 | +0.0000 [-0.0248, +0.0248] | 2/3 |" in text
    assert "| s | evos:step+sel-seed=7 | 1 | -0.10 | 0/1 | +0.0000 | 1/1 |" in text
    pooled = "\n".join(report.paired_with_uniform(report.streams_as_seeds(runs)))
    assert "| s | evos:step | 4 |" in pooled


def test_a_run_from_another_process_does_not_move_the_groups_equal_time_point():
    report = load_script("nerf_report")
    group = [_timed_run(report, "uniform", "group.json", 100.0, (19.0, 20.0)),
             _timed_run(report, "evos:step", "group.json", 80.0, (20.0, 21.0))]
    alone = _timed_run(report, "topk", "alone.json", 40.0, (19.0, 19.5))  # trained alone on a quiet machine
    summary = report.summarise(group + [alone])
    # Equal time is evos:step's 80 s (the shortest of uniform's process), not topk's 40 s.
    assert summary["s|uniform"]["psnr_equal_time"] == [pytest.approx(19.0 + 1.0 * (80 - 50) / 50)]
    assert summary["s|evos:step"]["psnr_equal_time"] == [pytest.approx(21.0)]


def test_shorter_budget_finals_are_judged_against_uniform_at_the_full_budget_of_the_same_seed():
    report = load_script("nerf_report")
    full = [_run(report, "s", "uniform", 0, 1200, 20.0, 0.50, 300.0), _run(report, "s", "uniform", 1, 1200, 21.0, 0.60, 300.0),
            _run(report, "s", "evos", 0, 1200, 25.0, 0.90, 300.0)]  # only uniform is a reference
    short = [_run(report, "s", "evos", 0, 600, 20.5, 0.49, 120.0), _run(report, "s", "evos", 1, 600, 21.2, 0.61, 180.0),
             _run(report, "s", "evos", 7, 600, 30.0, 0.99, 100.0)]  # no reference for seed 7: left out
    lines = report.against_full_budget(short, full)
    assert len(lines) == 3
    row = lines[2]
    # No uniform run at the short budget: its seconds have nothing of its own process to compare to.
    assert row.startswith("| s | evos | 0.50x | n/a | 20.85 ± 0.49 / 0.550 ± 0.085 | 20.50 ± 0.71 / 0.550 ± 0.071 |")
    assert "s0 +0.50, s1 +0.20" in row and "s0 -0.010, s1 +0.010" in row
    assert row.endswith("| 2/2, 1/2 |")


def test_shorter_budget_times_are_read_at_the_speed_of_their_own_process():
    """A half-budget run on a machine twice as fast as the full run's is half of the full time, not a quarter."""
    report = load_script("nerf_report")

    def run(strategy, seed, step, seconds, process):
        return report.MeasuredRun("s", strategy, seed, [{"step": step, "train_seconds": seconds, "psnr": 20.0, "ssim": 0.5}],
                                  process)

    full = [run("uniform", 0, 1200, 400.0, "full.json"), run("uniform", 1, 1200, 400.0, "full.json")]
    short = [run("uniform", 0, 600, 100.0, "half.json"), run("evos", 0, 600, 110.0, "half.json"),
             run("evos", 1, 600, 50.0, "alone.json")]  # seed 1: no uniform in its process
    rows = {line.split(" | ")[1]: line for line in report.against_full_budget(short, full)[2:]}
    assert rows["uniform"].startswith("| s | uniform | 0.50x | 0.50x |")
    assert rows["evos"].startswith("| s | evos | 0.50x | 0.55x (1/2 seeds) |")


def test_a_half_batch_run_counts_half_the_rays_a_step_and_no_time_from_steps():
    """1200 steps at half the rays is half the full budget's rays; its seconds do not scale by steps."""
    report = load_script("nerf_report")
    full = [_run(report, "s", "uniform", 0, 1200, 22.0, 0.70, 400.0)]
    short = [_run(report, "s", "uniform", 0, 1200, 21.0, 0.65, 200.0), _run(report, "s", "evos", 0, 1200, 21.5, 0.66, 205.0)]
    rows = {line.split(" | ")[1]: line for line in report.against_full_budget(short, full, ray_share=0.5)[2:]}
    assert rows["evos"].startswith("| s | evos | 0.50x | n/a | 21.50 / 0.660 | 22.00 / 0.700 |")
    assert "s0 -0.50" in rows["evos"] and "s0 -0.040" in rows["evos"] and rows["evos"].endswith("| 0/1, 0/1 |")


def test_budget_report_refuses_references_of_another_model_and_short_runs_that_are_not_shorter(tmp_path):
    budget = load_script("budget_report")

    def write(name, steps, model, scene="s", rays=512):
        runs = [{"scene": scene, "strategy": "uniform", "seed": 0,
                 "history": [{"step": steps, "train_seconds": 1.0, "psnr": 20.0, "ssim": 0.5}]}]
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"budget": {"steps": steps, "rays": rays, "model": model}, "runs": runs}))
        return path

    full, half = write("full", 1200, {"w": 1}), write("half", 600, {"w": 1})
    budget.main(budget.Args(short=[half], full=[full], out=tmp_path / "t.md"))
    assert "| s | uniform | 0.50x |" in (tmp_path / "t.md").read_text()
    with pytest.raises(SystemExit, match="other.json: its budget differs"):
        budget.main(budget.Args(short=[write("other", 600, {"w": 2})], full=[full]))
    with pytest.raises(SystemExit, match="fewer rays in all \\(steps x rays a step\\) than --full's 1200 x 512"):
        budget.main(budget.Args(short=[write("long", 1200, {"w": 1})], full=[full]))
    # Fewer rays a step is a smaller budget too; mixed ray counts on one side have no single share.
    budget.main(budget.Args(short=[write("narrow", 1200, {"w": 1}, rays=256)], full=[full], out=tmp_path / "n.md"))
    assert "| s | uniform | 0.50x | n/a |" in (tmp_path / "n.md").read_text()
    with pytest.raises(SystemExit, match="narrow_t.json: 256 rays a step, but .*half.json has 512"):
        budget.main(budget.Args(short=[half, write("narrow_t", 1200, {"w": 1}, scene="t", rays=256)], full=[full]))
    with pytest.raises(SystemExit, match="no \\(scene, seed\\) of --short has a uniform run in --full"):
        budget.main(budget.Args(short=[half], full=[write("full_other_scene", 1200, {"w": 1}, scene="t")]))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(SystemExit, match="broken.json: not a JSON result file"):
        budget.main(budget.Args(short=[tmp_path / "broken.json"], full=[full]))
    # A part given together with the merged file that holds it would count its seed twice.
    with pytest.raises(SystemExit, match="--short: s seed 0 uniform is in both .*half.json and .*half_again.json"):
        budget.main(budget.Args(short=[half, write("half_again", 600, {"w": 1})], full=[full]))


def test_gap_to_uniform_pairs_each_seed_with_its_own_uniform_at_every_common_step():
    report = load_script("nerf_report")

    def run(strategy, seed, points):  # points: step -> (psnr, ssim)
        return report.MeasuredRun("s", strategy, seed, [{"step": k, "train_seconds": 1.0, "psnr": p, "ssim": q}
                                                         for k, (p, q) in points.items()])

    runs = [run("uniform", 0, {100: (20.0, 0.50), 200: (21.0, 0.60)}),
            run("uniform", 1, {100: (22.0, 0.70), 200: (23.0, 0.80)}),
            run("evos", 0, {100: (20.4, 0.49), 200: (21.2, 0.61)}),
            run("evos", 1, {100: (22.2, 0.68), 200: (23.0, 0.80)}),
            run("topk", 2, {100: (30.0, 0.90)})]  # no uniform of seed 2: left out, not compared with another seed's
    text = "\n".join(report.gap_to_uniform(runs))
    assert "| strategy | step 100 | step 200 |" in text
    assert "| evos | +0.30 / -0.015 (2/2) | +0.10 / +0.005 (0/2) |" in text
    assert "topk" not in text
    assert report.gap_to_uniform(runs, views="train") == []  # no run scored its training views
    # A run on another selection stream is measured against uniform on that stream, never the default one.
    streams = "\n".join(report.gap_to_uniform(runs + [run("uniform:sel-seed=7", 0, {100: (19.0, 0.40)}),
                                                       run("evos:sel-seed=7", 0, {100: (19.5, 0.42)})]))
    assert "| evos:sel-seed=7 | +0.50 / +0.020 (0/1) | - |" in streams and "| uniform:sel-seed=7 |" not in streams


def test_the_per_view_gap_pairs_each_view_with_uniforms_same_view_on_the_same_seed():
    report = load_script("nerf_report")

    def run(strategy, seed, psnr, ssim):  # per-view scores at the end
        return report.MeasuredRun("s", strategy, seed, [{"step": 100, "train_seconds": 1.0, "psnr": sum(psnr) / 2,
                                                         "ssim": sum(ssim) / 2, "view_psnr": psnr, "view_ssim": ssim}])

    runs = [run("uniform", 0, [20.0, 22.0], [0.50, 0.60]), run("uniform", 1, [21.0, 23.0], [0.55, 0.65]),
            run("evos", 0, [20.4, 21.8], [0.51, 0.58]), run("evos", 1, [21.2, 23.0], [0.54, 0.66]),
            run("topk", 2, [30.0, 30.0], [0.9, 0.9])]  # no uniform of seed 2: left out
    text = "\n".join(report.gap_per_view(runs))
    assert "| strategy | seeds | view 1 | view 2 |" in text
    assert "| evos | 2 | +0.30 / +0.000 (1) | -0.10 / -0.005 (1) |" in text
    assert "topk" not in text
    # A run on another selection stream is measured against uniform on that stream, never the default one.
    streams = runs + [run("uniform:sel-seed=7", 0, [19.0, 21.0], [0.40, 0.50]), run("evos:sel-seed=7", 0, [19.5, 21.0], [0.42, 0.50])]
    assert "| evos:sel-seed=7 | 1 | +0.50 / +0.020 (0) | +0.00 / +0.000 (0) |" in "\n".join(report.gap_per_view(streams))
    assert "| uniform:sel-seed=7 |" not in "\n".join(report.gap_per_view(streams))
    # Runs without per-view scores (parts from before they were kept) print nothing.
    assert report.gap_per_view([report.MeasuredRun("s", s, 0, [{"step": 100, "psnr": 20.0, "ssim": 0.5}])
                                for s in ("uniform", "evos")]) == []


def test_the_training_view_gap_reads_the_training_view_scores():
    report = load_script("nerf_report")

    def run(strategy, test, train):
        return report.MeasuredRun("s", strategy, 0, [{"step": 100, "train_seconds": 1.0, "psnr": test[0], "ssim": test[1],
                                                      "train_psnr": train[0], "train_ssim": train[1]}])

    runs = [run("uniform", (20.0, 0.50), (22.0, 0.60)), run("topk", (19.5, 0.48), (23.0, 0.65))]
    assert "| topk | -0.50 / -0.020 (1/1) |" in "\n".join(report.gap_to_uniform(runs))
    train = "\n".join(report.gap_to_uniform(runs, views="train"))
    assert "over training, train views" in train
    assert "| topk | +1.00 / +0.050 (0/1) |" in train


def test_a_seed_trained_on_another_cpu_than_its_uniform_run_is_named():
    """Runs of one seed share random numbers only on one kind of CPU; a merge must say when they do not."""
    report = load_script("nerf_report")

    def run(strategy, seed, host, psnr_at):
        history = [{"step": s, "train_seconds": float(s), "psnr": p, "ssim": 0.5, "selection_seconds": 0.0,
                    "refresh_seconds": 0.0} for s, p in zip((500, 1000), psnr_at)]
        return report.MeasuredRun("s", strategy, seed, history, f"{host}.json", host)

    runs = [run("uniform", 0, "AMD", (19.0, 20.0)), run("evos:step", 0, "Intel", (20.0, 20.5)),
            run("uniform", 1, "AMD", (19.0, 20.0)), run("evos:step", 1, "AMD", (20.0, 20.5)),
            run("uniform", 2, "", (19.0, 20.0)), run("evos:step", 2, "Intel", (20.0, 20.5))]  # 2: not recorded
    text = "\n".join(report.checks(report.summarise(runs)))
    assert "evos:step seed(s) 0 trained on another CPU than their uniform run" in text
    baseline = "\n".join(report.checks(report.summarise(runs[2:4] + [run("errormap", 1, "Intel", (19.5, 20.2))])))
    assert "errormap seed(s) 1 trained on another CPU" in baseline and "evos:step seed(s)" not in baseline
    same = "\n".join(report.checks(report.summarise(runs[2:])))
    assert "another CPU" not in same
    both = report.checks(report.summarise(runs[:2] + [run("errormap", 0, "Intel", (19.5, 20.2))]))
    moved = [line for line in both if "another CPU" in line]
    assert len(moved) == 1 and "errormap seed(s) 0; evos:step seed(s) 0 trained" in moved[0]  # once per scene


def test_merged_runs_keep_the_cpu_of_the_part_that_trained_them(tmp_path):
    report = load_script("nerf_report")
    part = {"budget": {}, "host": "Intel Xeon", "runs": [{"scene": "s", "strategy": "uniform", "seed": 0, "history": []}]}
    merged = {"budget": {}, "host": "AMD; Intel Xeon",
              "runs": [{"scene": "s", "strategy": "evos", "seed": 0, "history": [], "process": "p.json", "host": "AMD"}]}
    assert report.measured_runs(part, "part.json")[0].host == "Intel Xeon"
    assert report.measured_runs(merged)[0].host == "AMD"
    merged["runs"][0]["host"] = ""  # a run whose part recorded none: not one of the merged file's hosts
    assert report.measured_runs(merged)[0].host == ""
    assert report.label_list(["AMD; Intel Xeon", "AMD", "not recorded"]) == "AMD; Intel Xeon; not recorded"


def test_halfway_lead_is_each_runs_lead_at_half_uniforms_budget_against_uniforms_second_half_gain():
    report = load_script("nerf_report")

    def run(strategy, seed, points):  # points: step -> psnr
        return report.MeasuredRun("s", strategy, seed, [{"step": k, "train_seconds": 1.0, "psnr": p, "ssim": 0.5}
                                                         for k, p in points.items()])

    runs = [run("uniform", 0, {100: 20.0, 300: 22.0, 400: 22.5}),  # at step 200 (half of 400): 21.0
            run("evos", 0, {100: 20.5, 300: 23.0, 400: 23.2}),  # at 200: 21.75, so it leads by 0.75
            run("topk", 0, {200: 22.5, 400: 23.0}),  # measured at 200 itself: 1.5 ahead, enough for 0.5x
            run("evos", 1, {100: 25.0})]  # no uniform of seed 1: no row
    text = "\n".join(report.halfway_lead(runs))
    assert "| scene | seed | uniform gains | evos | topk |" in text
    assert "| s | 0 | 1.50 | +0.75 | +1.50 |" in text
    assert "| s | 1 |" not in text
    assert report.halfway_lead([run("evos", 0, {100: 20.0})]) == []


def test_head_to_head_pairs_evos_with_each_baseline_by_seed_and_counts_never_as_infinitely_slow():
    report = load_script("nerf_report")

    def row(strategy, seeds, steps, psnr, ssim):
        return {"scene": "s", "strategy": strategy, "seeds": seeds, "step_ratio": steps, "psnr": psnr, "ssim": ssim}

    mine = row("evos:step", [0, 1, 2, 3], [0.5, None, 0.6, None], [20.5, 20.0, 21.1, 19.0], [0.5] * 4)
    # listed in another seed order: the pairs must follow the seeds, not the positions
    errormap = row("errormap", [3, 2, 1, 0], [None, 0.8, 0.7, 1.0], [19.0, 20.6, 20.1, 20.3], [0.49] * 4)
    topk = row("topk", [0], [None], [20.0], [0.45])
    text = "\n".join(report.head_to_head({f"s|{r['strategy']}": r for r in (mine, errormap, topk)}))
    # seed 0 sooner (0.5 / 1.0), seed 1 later (never / 0.7), seed 2 sooner (0.6 / 0.8), seed 3 neither reaches:
    # a tie with no ratio, so the median is over 0.5, 0.75 and infinity; PSNR differences 0.2, -0.1, 0.5, 0
    # (mean 0.15, sd 0.2646, t(0.975, 3) = 3.1824: half-width 0.421)
    assert "| s | evos:step | errormap | 4 | 2 / 1 / 1 | 0.75 | 1 | +0.15 [-0.27, +0.57] | +0.0100 [+0.0100, +0.0100] |" in text
    assert "| s | evos:step | topk | 1 | 1 / 0 / 0 | baseline never | 1 | +0.50 | +0.0500 |" in text
    assert report.head_to_head({"s|evos:step": mine}) == []  # no baseline ran
    # a run on selection stream 7 meets the baseline on stream 7, not the default stream's
    on_7 = {**mine, "strategy": "evos:step+sel-seed=7"}
    text = "\n".join(report.head_to_head({f"s|{r['strategy']}": r for r in (on_7, errormap, {**topk, "strategy": "topk:sel-seed=7"})}))
    assert "| s | evos:step+sel-seed=7 | topk:sel-seed=7 | 1 |" in text and "errormap" not in text


def test_replicates_sort_as_numbers_not_as_text():
    report = load_script("nerf_report")
    runs = [report.MeasuredRun("s", "uniform", seed, _timed_run(report, "uniform", "a.json", 100.0, (19.0, 20.0)).history)
            for seed in ("10", "2/1001", "2")]
    assert report.summarise(runs)["s|uniform"]["seeds"] == ["2", "2/1001", "10"]


def test_checks_judge_a_run_on_another_stream_against_uniform_and_the_baselines_on_that_stream():
    report = load_script("nerf_report")
    summary = {f"s|{r['strategy']}": r for r in (
        _row("uniform", [1.0], 20.0, 0.50),
        _row("errormap", [0.5], 20.5, 0.49),  # fast on the default stream
        _row("uniform:sel-seed=7", [1.0], 21.0, 0.60),
        _row("errormap:sel-seed=7", [0.9], 21.0, 0.59),
        _row("evos:step+sel-seed=7", [0.6], 21.1, 0.61),
    )}
    text = "\n".join(report.checks(summary))
    assert "evos:step+sel-seed=7 reaches uniform's final PSNR in 0.60x" in text
    assert "not worse than uniform in PSNR or SSIM (21.10 vs 21.00 dB, 0.610 vs 0.600)" in text
    assert "vs the best baseline (errormap:sel-seed=7, 0.90x of uniform's time): +33% sooner (target >= 15%: met)" in text


def test_median_interval_resamples_seeds_and_counts_never_as_infinitely_slow():
    report = load_script("nerf_report")
    # every seed the same: the bootstrap cannot move the median
    assert report.median_interval([0.6, 0.6, 0.6]) == (0.6, 0.6, 0.6)
    # one seed: a median and no interval
    assert report.median_interval([0.7]) == (0.7, None, None)
    # two modes, as Soft Mining on fox: 5 seeds fast, 4 never. Resampled, the median lands on either
    # side, and the bounds are seeds' own values (no interpolation between 0.4x and never)
    median, low, high = report.median_interval([0.35, 0.32, 0.40, 0.64, 0.50, None, None, None, None])
    assert median == 0.64 and low in (0.32, 0.35, 0.40) and high == float("inf")
    # a tight sampler stays tight
    median, low, high = report.median_interval([0.70, 0.72, 0.74, 0.71, 0.73, 0.75, 0.69])
    assert median == 0.72 and 0.69 <= low <= 0.72 <= high <= 0.75


def test_median_intervals_list_every_sampler_but_uniform_that_ran_two_seeds_or_more():
    report = load_script("nerf_report")
    summary = {f"s|{r['strategy']}": r for r in (
        {"scene": "s", "strategy": "uniform", "step_ratio": [1.0, 1.0]},
        {"scene": "s", "strategy": "softmining", "step_ratio": [0.3, None, None]},
        {"scene": "s", "strategy": "evos:step", "step_ratio": [0.6, 0.6]},
        {"scene": "s", "strategy": "topk", "step_ratio": [0.5]},
    )}
    text = "\n".join(report.median_intervals(summary))
    assert "| s | softmining | 3 | 1 | never | 0.30x to never |" in text
    assert "| s | evos:step | 2 | 2 | 0.60x | 0.60x to 0.60x |" in text
    assert "uniform" not in text.split("|---|")[-1] and "topk" not in text
    assert report.median_intervals({"s|topk": summary["s|topk"]}) == []


def test_a_run_whose_evaluations_touched_training_where_its_uniforms_did_not_is_named():
    """Before evaluations kept nerfacto's proposal-update schedule, each one changed the training after it:
    a part trained since then shares its random numbers with an older uniform run only up to its first evaluation."""
    report = load_script("nerf_report")
    history = [{"step": s, "train_seconds": float(s), "psnr": p, "ssim": 0.5, "selection_seconds": 0.0,
                "refresh_seconds": 0.0} for s, p in ((500, 19.0), (1000, 20.0))]
    old = {"budget": {"steps": 1000}, "runs": [{"scene": "s", "strategy": "uniform", "seed": 0, "history": history}]}
    new = {"budget": {"steps": 1000}, "runs": [{"scene": "s", "strategy": "evos:step", "seed": 0, "history": history,
                                                  "renders_keep_training": True}]}
    runs = report.measured_runs(old, "old.json") + report.measured_runs(new, "new.json")
    assert [r.renders_keep_training for r in runs] == [False, True]  # not recorded: from before the change
    text = "\n".join(report.checks(report.summarise(runs)))
    assert ("evos:step seed(s) 0 trained on the other side of the change that keeps evaluations from touching training "
            "than their uniform run") in text
    assert "trained on the other side" not in "\n".join(report.checks(report.summarise(report.measured_runs(new, "n") + [
        report.MeasuredRun("s", "uniform", 0, history, "u", renders_keep_training=True)])))
