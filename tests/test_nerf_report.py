"""The benchmark report's checks: every EVOS row is judged against uniform and the best baseline."""

from script_modules import load_script


def _row(strategy, ratios, psnr, ssim):
    return {"scene": "s", "strategy": strategy, "ratio": ratios, "plateau_rise": [0.1], "psnr_equal_time": [psnr],
            "ssim_equal_time": [ssim], "overhead": [0.01], "refresh": [0.005]}


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
    assert "vs the best baseline (errormap, 0.80x): +25% sooner (target >= 15%: met)" in text
    assert "evos:step reaches uniform's final PSNR in never" in text
    assert "it is worse than uniform in SSIM" in text  # evos:constant: 0.49 < 0.50
    assert "it is not worse than uniform in PSNR or SSIM" in text  # evos:step
    assert "overhead 1.50%" in text
