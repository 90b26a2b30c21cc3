"""The side-by-side table against the official code: which clock reading counts as reaching the target."""

from script_modules import load_script


def _run(code, strategy, psnrs, cpu_per_step):
    history = []
    for i, psnr in enumerate(psnrs):
        step = 100 * (i + 1)
        history.append({"step": step, "psnr": psnr, "train_cpu_time": cpu_per_step * step, "train_time": 2 * cpu_per_step * step})
    return {"code": code, "strategy": strategy, "history": history}


def test_time_to_target_is_the_first_logged_step_at_or_above_the_higher_full_batch_final():
    bench = load_script("bench_vs_official")
    runs = [
        _run("ours", "full", [20.0, 25.0, 30.0], 1.0),
        _run("official", "full", [20.0, 25.0, 30.5], 1.0),
        _run("ours", "evos", [22.0, 30.5, 31.0], 0.5),
        _run("official", "evos", [21.0, 29.0, 30.4], 0.6),
    ]
    summary = bench.summarise(runs)
    assert summary["common_target"] == 30.5
    ours, official = summary["rows"][2], summary["rows"][3]
    # ours: own full's final (30.0) and the common target (30.5) first reached at step 200 = 100 CPU-s
    assert ours["ttt_own_train_cpu_time"] == {"step": 200, "s": 100.0}
    assert ours["ttt_common_train_cpu_time"] == {"step": 200, "s": 100.0}
    assert ours["ttt_common_train_time"] == {"step": 200, "s": 200.0}
    # official: reaches its own full's 30.5? no (30.4 at the end); so neither target is reached
    assert official["ttt_own_train_cpu_time"] is None and official["ttt_common_train_cpu_time"] is None
    assert "not reached" in bench.markdown(summary)


def test_a_table_without_full_batch_runs_says_there_is_no_target():
    bench = load_script("bench_vs_official")
    summary = bench.summarise([_run("ours", "evos", [22.0, 30.5], 0.5), _run("official", "evos", [21.0, 29.0], 0.6)])
    assert summary["common_target"] is None
    assert "No full-batch run given" in bench.markdown(summary)
