"""Tables, plots and the summary JSON of the NeRF benchmark (``scripts/bench_nerf.py``).

Every number is read off the measured evaluation histories: a run is a list of
``{step, train_seconds, psnr, ssim, selection_seconds, refresh_seconds}`` at each evaluation.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

from evos_nerf.curves import reach, value_at

BASELINES = ("errormap", "softmining", "topk")
"""The samplers a user would pick instead of EVOS (besides uniform)."""


@dataclass
class MeasuredRun:
    """A finished run as a result file keeps it: what the report functions read."""

    scene: str
    strategy: str
    seed: Any
    """An int, or a ``"seed/stream"`` label in a report of :func:`streams_as_seeds`."""
    history: List[Dict[str, float]]
    process: str = ""
    """Which process trained it (the result file it was first written to). Training seconds compare
    only between runs of one process: separate processes ran under different loads on this machine."""
    host: str = ""
    """The CPU it trained on, as its result file records it ("" when not recorded). Runs of one seed
    share their random numbers only on one kind of CPU: on an Intel Xeon, fox seed 0's uniform
    differed from the AMD EPYC run in the fourth decimal of PSNR at step 240 and EVOS by 0.11 dB
    (CPU kernels round differently, and ranking amplifies it). Two AMD EPYC generations (AVX512 and
    AVX2) reproduced fox seeds 20 and 21's uniform bit for bit, so another host label marks a
    possible break of common random numbers, not a certain one."""
    test_images: Optional[int] = None
    """How many of the scene's test views it was scored on (the first N; None: all of them). On fox
    the preset scores 3 of its 9 held-out views, and the two averages differ by 0.3-0.4 dB for one
    run, so runs scored on different views never share a report."""
    renders_keep_training: bool = False
    """Whether its evaluations left nerfacto's proposal-update schedule alone (recorded since they
    do). Before, each evaluation took the update due to the next training step, so a run of one seed
    shares its random numbers with a run from the other side of that change only up to its first
    evaluation: on lego_100 uniform moved by 0.0004 dB, and EVOS's ranking amplifies such changes."""


def read_result(path: Path) -> Optional[Dict[str, Any]]:
    """A ``bench_nerf`` result file, or None for a part's ``*_summary.json`` (a list, which a shell
    glob picks up too). Anything else stops with one line naming the file."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"{path}: no such result file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SystemExit(f"{path}: not a JSON result file ({err})") from None
    if isinstance(data, list):
        return None
    if not isinstance(data, dict) or "runs" not in data or "budget" not in data:
        raise SystemExit(f"{path} is not a bench_nerf result file (no runs or budget)")
    return data


def measured_runs(data: Dict[str, Any], process: str = "") -> List[MeasuredRun]:
    """The runs of a result file; a run that does not name its process is given ``process``, and one
    that does not name its CPU the file's, when the file names exactly one (a merged file's list of
    several says nothing about which run trained where)."""
    file_host = data.get("host") or ""
    file_host = "" if ";" in file_host else file_host
    return [MeasuredRun(r["scene"], r["strategy"], r["seed"], r["history"], r.get("process") or process,
                        r.get("host") or file_host,
                        r["test_images"] if "test_images" in r else preset_test_images(data.get("preset", {}), r["scene"]),
                        r.get("renders_keep_training", False))
            for r in data["runs"]]


def preset_test_images(preset: Dict[str, Any], scene: str) -> Optional[int]:
    """The test views a preset scores on a scene (the scene's own setting, else the preset's; None:
    all). A run written before runs recorded theirs was scored on these: ``--test-images`` did not
    reach a scene with its own setting then."""
    spec = next((s for s in preset.get("scenes", []) if s.get("name") == scene), {})
    return spec.get("test_images") or preset.get("test_images")


def label_list(labels: Sequence[str]) -> str:
    """Several files' labels (their CPUs, their torch versions), each once: a merged file's label
    lists its own with '; '. Callers pass 'not recorded' for a part that never recorded one."""
    return "; ".join(sorted({part for label in labels for part in label.split("; ")}))


@dataclass
class ResultFile:
    path: Path
    data: Dict[str, Any]
    runs: List[MeasuredRun]


def on_first_views(run: MeasuredRun, views: int, flag: str) -> MeasuredRun:
    """``run`` re-read on its first ``views`` test views, from the per-view scores it kept (as if it
    had been scored on those alone), so that it can share a report with runs scored on them: fox's
    preset scores 3 of its 9 held-out views."""
    if run.test_images == views:
        return run
    kept = [len(h.get("view_psnr", ())) for h in run.history]
    if min(kept) < views:
        raise SystemExit(f"{flag} {views}: {run.scene} seed {run.seed} {run.strategy} ({run.process}) has per-view scores "
                         f"for {min(kept)} view(s) only (scored on {fmt_views(run.test_images)})")
    history = []
    for h in run.history:
        first = {key: h[key][:views] for key in ("view_psnr", "view_ssim", "view_cc_psnr") if key in h}
        means = {"psnr": statistics.mean(first["view_psnr"]), "ssim": statistics.mean(first["view_ssim"])}
        if "view_cc_psnr" in first:
            means["cc_psnr"] = statistics.mean(first["view_cc_psnr"])
        history.append({**h, **first, **means})
    return dataclasses.replace(run, history=history, test_images=views)


def read_results(paths: Sequence[Path], flag: str, first_views: Optional[int] = None) -> List[ResultFile]:
    """The result files of one report, skipping parts' summaries. A (scene, seed, strategy) found in
    two files stops with one line naming both (``flag`` names the option they came from): counted
    twice, one run would pass for two seeds in every mean and median, as when a part is given
    together with a merged report that already holds it. So does a run that stopped before its
    budget's last step (a stopped group's partial file): its last evaluation would pass for the end.
    And so does a scene scored on other test views in one file than in another, unless
    ``first_views`` re-reads every run on that many (see :func:`on_first_views`)."""
    files: List[ResultFile] = []
    seen: Dict[tuple, Path] = {}
    scored_on: Dict[str, tuple] = {}
    for path in paths:
        data = read_result(path)
        if data is None:
            continue
        runs = measured_runs(data, process=str(path))
        if first_views:
            runs = [on_first_views(run, first_views, "--first-views") for run in runs]
        for run in runs:
            last = run.history[-1]["step"] if run.history else 0
            if last < data["budget"]["steps"]:
                raise SystemExit(f"{flag}: {path}: {run.scene} seed {run.seed} {run.strategy} stopped at step {last} "
                                 f"of {data['budget']['steps']} (a partial file); leave it out")
            views = scored_on.setdefault(run.scene, (run.test_images, path))
            if views[0] != run.test_images:
                raise SystemExit(f"{flag}: {run.scene} was scored on {fmt_views(views[0])} in {views[1]} but on "
                                 f"{fmt_views(run.test_images)} in {path}: a report compares runs scored on the same views")
            key = (run.scene, run.seed, run.strategy)
            if key in seen:
                raise SystemExit(f"{flag}: {run.scene} seed {run.seed} {run.strategy} is in both {seen[key]} and {path}")
            seen[key] = path
        files.append(ResultFile(path, data, runs))
    return files


def fmt_views(test_images: Optional[int]) -> str:
    return "every test view" if test_images is None else f"the first {test_images} test view(s)"


def plateau_step(budget: float) -> float:
    """Where the convergence check reads uniform's PSNR: three quarters of the budget (the rise over
    the last quarter must stay under 0.2 dB). The benchmark evaluates there."""
    return 0.75 * budget


def plateau_rise(history: List[Dict[str, float]]) -> float:
    """Test PSNR gained over the last quarter of the budget (the convergence check); nan when the
    run was first evaluated after three quarters of it (``--evals 1``), where there is nothing to
    compare with: a clamped curve would read as a rise of 0, i.e. "converged"."""
    last = history[-1]["step"]
    if history[0]["step"] > plateau_step(last):
        return math.nan
    return history[-1]["psnr"] - value_at(history, "step", plateau_step(last), "psnr")


def plateau_read_between_evaluations(history: List[Dict[str, float]]) -> bool:
    """Whether :func:`plateau_rise` interpolated (runs from before the benchmark evaluated at three
    quarters of the budget): on lego_100 such a reading was off by up to 0.08 dB."""
    return not any(abs(h["step"] - plateau_step(history[-1]["step"])) < 1 for h in history)


def largest_rise(rises: Sequence[float]) -> Optional[float]:
    """The most uniform rose over the last quarter on any seed (None where any seed was not measured)."""
    return None if any(math.isnan(value) for value in rises) else max(rises)


def median_ratio(values: Sequence[Optional[float]]) -> Optional[float]:
    """Median over seeds, a never-reached seed counting as infinitely slow (None if that is the median)."""
    if not values:
        return None
    m = statistics.median([math.inf if v is None else v for v in values])
    return None if math.isinf(m) else m


def seed_order(seed: Any) -> tuple:
    """Sort key of a seed: an int, or a ``"seed/stream"`` replicate of :func:`streams_as_seeds`
    (as numbers, so replicate "10" follows "2" rather than "1")."""
    return tuple(int(part) for part in str(seed).split("/"))


def summarise(runs) -> Dict[str, Dict[str, Any]]:
    """Per (scene, strategy): finals, time/steps to uniform's final PSNR, PSNR/SSIM at equal time."""
    out: Dict[str, Dict[str, Any]] = {}
    for scene in sorted({r.scene for r in runs}):
        for seed in sorted({r.seed for r in runs if r.scene == scene}, key=seed_order):
            group = {r.strategy: r for r in runs if r.scene == scene and r.seed == seed}
            uniform = group.get("uniform")
            # The comparison time comes from the runs timed with uniform: a run added later from a
            # process under another load must not move the point at which the group's runs compare.
            # A group with no default-stream uniform (a part run on one selection stream) is timed
            # against uniform on each run's own stream.
            timer = {name: uniform if uniform is not None else same_stream_uniform(name, group) for name in group}
            with_uniform = {name: timer[name] is not None and r.process == timer[name].process for name, r in group.items()}
            other_host = {name: timer[name] is not None and _hosts_differ(r, timer[name]) for name, r in group.items()}
            other_evaluation = {name: timer[name] is not None and r.renders_keep_training != timer[name].renders_keep_training
                                for name, r in group.items()}
            timed = [r for name, r in group.items() if timer[name] is None or with_uniform[name]]
            equal_time = min(r.history[-1]["train_seconds"] for r in timed)
            for name, r in group.items():
                final = r.history[-1]
                row = out.setdefault(f"{scene}|{name}", {
                    "scene": scene, "strategy": name, "seeds": [], "psnr": [], "ssim": [], "seconds": [],
                    "ratio": [], "step_ratio": [], "overhead": [], "refresh": [], "psnr_equal_time": [],
                    "ssim_equal_time": [], "plateau_rise": [], "plateau_interpolated": [], "timed_with_uniform": [],
                    "other_host_than_uniform": [], "other_evaluation_than_uniform": [],
                })
                row["seeds"].append(r.seed)
                row["psnr"].append(final["psnr"])
                row["ssim"].append(final["ssim"])
                row["seconds"].append(final["train_seconds"])
                row["overhead"].append(final["selection_seconds"] / final["train_seconds"])
                row["refresh"].append(final["refresh_seconds"] / final["train_seconds"])
                row["psnr_equal_time"].append(value_at(r.history, "train_seconds", equal_time, "psnr"))
                row["ssim_equal_time"].append(value_at(r.history, "train_seconds", equal_time, "ssim"))
                row["plateau_rise"].append(plateau_rise(r.history))
                row["plateau_interpolated"].append(plateau_read_between_evaluations(r.history))
                row["timed_with_uniform"].append(with_uniform[name])
                row["other_host_than_uniform"].append(other_host[name])
                row["other_evaluation_than_uniform"].append(other_evaluation[name])
                reference = same_stream_uniform(name, group) or uniform
                if reference is not None:
                    target = reference.history[-1]["psnr"]
                    for column, key in (("ratio", "train_seconds"), ("step_ratio", "step")):
                        value = reach(r.history, target, key)
                        row[column].append(None if value is None else value / reference.history[-1][key])
    return out


STREAM_VARIANT = "sel-seed"
"""The strategy variant (``X:sel-seed=N``, ``X:a+sel-seed=N``) that runs X on selection stream N."""


def split_stream(name: str):
    """``(name without its stream variant, stream or None)``: ``evos:step+sel-seed=7`` is
    ``("evos:step", "7")``, ``uniform:sel-seed=7`` is ``("uniform", "7")``."""
    base, _, variants = name.partition(":")
    kept, stream = [], None
    for variant in filter(None, variants.split("+")):
        key, _, value = variant.partition("=")
        if key == STREAM_VARIANT:
            stream = value
        else:
            kept.append(variant)
    return base + (":" + "+".join(kept) if kept else ""), stream


def on_stream(name: str, stream: Optional[str]) -> str:
    """``name`` run on selection stream ``stream`` (None: the seed's default stream)."""
    return name if stream is None else f"{name}:{STREAM_VARIANT}={stream}"


def uniform_name(name: str) -> str:
    """The name of uniform on ``name``'s selection stream: ``uniform``, or ``uniform:sel-seed=N``."""
    return on_stream("uniform", split_stream(name)[1])


def same_stream_uniform(name: str, group: Dict[str, Any]):
    """Uniform on the same selection stream as ``name`` (``sel-seed=N``), if the group has it.

    A selection stream alone moves uniform's final PSNR by up to 1.9 dB on fox (benchmarks/README,
    "The selection stream alone"), so a run on another stream is measured against uniform on its
    own stream, never the seed's default one. Only the step and time ratios are: the equal-time
    point and the "timed with uniform" flag stay the default uniform's where the group has one, so
    a report comparing streams in full is made with :func:`streams_as_seeds`, where each stream is
    its own group."""
    return group.get(uniform_name(name)) if split_stream(name)[1] is not None else None


def with_uniform(runs) -> List[tuple]:
    """``(run, uniform)`` for every run but uniform's own, with uniform of its (scene, seed) on its
    own selection stream (see :func:`same_stream_uniform` for why); runs with no such uniform run
    are left out."""
    by_key = {(r.scene, r.seed, r.strategy): r for r in runs}
    pairs = []
    for r in runs:
        ref = by_key.get((r.scene, r.seed, uniform_name(r.strategy)))
        if split_stream(r.strategy)[0] != "uniform" and ref is not None:
            pairs.append((r, ref))
    return pairs


def colour_corrected(runs) -> List[MeasuredRun]:
    """The runs with each evaluation's PSNR replaced by its colour-corrected PSNR (``cc_psnr``: each
    test view forgiven the affine colour map that best takes its render to the photo), so that
    every table, check, ratio and curve reads it. SSIM is kept as measured.

    nerfacto renders a test view with the mean of the training images' appearance embeddings, which
    a sampler that favours some images could move, shifting every view's colour at once; this
    report scores the scene with that forgiven. (On fox it kept Soft Mining's dB-wide gaps, which
    were not colour.) A run evaluated before runs recorded it stops with one line naming it."""
    out: List[MeasuredRun] = []
    for r in runs:
        if any("cc_psnr" not in h for h in r.history):
            raise SystemExit(f"--colour-corrected: {r.scene} seed {r.seed} {r.strategy} ({r.process or 'this process'}) "
                             "has no colour-corrected PSNR (evaluated before bench_nerf recorded it)")
        out.append(dataclasses.replace(r, history=[{**h, "psnr": h["cc_psnr"]} for h in r.history]))
    return out


def streams_as_seeds(runs) -> List[MeasuredRun]:
    """The runs with each (seed, selection stream) pair as one replicate: ``X+sel-seed=N`` of seed
    s becomes X on replicate ``"s/N"`` (the default stream is ``"s"``), so every table, check and
    median counts it as another seed of X, measured against uniform on its own stream.

    On fox the stream alone moves uniform's final PSNR by up to 1.9 dB with the model's
    initialisation fixed, so one stream per seed under-samples what a sampler does; pooling
    streams as replicates gives the medians more, and fairer, draws. A name that two runs of
    one replicate would share (``X+sel-seed=N`` beside ``X:sel-seed=N``) stops with one line."""
    out: List[MeasuredRun] = []
    seen = set()
    for r in runs:
        strategy, stream = split_stream(r.strategy)
        replicate = f"{r.seed}" if stream is None else f"{r.seed}/{stream}"
        if (r.scene, replicate, strategy) in seen:
            raise SystemExit(f"--streams-as-seeds: {r.scene} seed {replicate} has two runs named {strategy} "
                             f"once the stream is taken out of the name (one is {r.strategy})")
        seen.add((r.scene, replicate, strategy))
        out.append(dataclasses.replace(r, strategy=strategy, seed=replicate))
    return out


def _hosts_differ(run, uniform) -> bool:
    """Known to have trained on different CPUs (a merged file lists several hosts: not attributable)."""
    hosts = (run.host, uniform.host)
    return all(hosts) and not any(";" in h for h in hosts) and hosts[0] != hosts[1]


def fmt_spread(values: List[float], digits: int = 2) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def fmt_ratio(values: List[Optional[float]]) -> str:
    if not values:
        return "-"
    m = median_ratio(values)
    reached = sum(v is not None for v in values)
    text = "not reached" if m is None else f"{m:.2f}x"
    return f"{text} ({reached}/{len(values)} seeds reach it)" if reached < len(values) else text


def table(summary: Dict[str, Dict[str, Any]]) -> List[str]:
    lines = [
        "| scene | strategy | test PSNR | test SSIM | PSNR / SSIM at equal time | train s | time to uniform's final PSNR (median) | steps to it (median) | sampler + re-measure overhead |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary.values():
        overhead = 100 * statistics.mean(o + f for o, f in zip(row["overhead"], row["refresh"]))
        lines.append(
            f"| {row['scene']} | {row['strategy']} | {fmt_spread(row['psnr'])} | {fmt_spread(row['ssim'], 3)} | "
            f"{fmt_spread(row['psnr_equal_time'])} / {fmt_spread(row['ssim_equal_time'], 3)} | "
            f"{fmt_spread(row['seconds'], 0)} | {fmt_ratio(row['ratio'])} | {fmt_ratio(row['step_ratio'])} | {overhead:.2f}% |"
        )
    return lines


def _evos_rows(summary: Dict[str, Dict[str, Any]], scene: str) -> List[Dict[str, Any]]:
    """``evos`` and every ``evos:<variant>`` row of a scene (which one is a method's default depends on the method)."""
    return [row for row in summary.values() if row["scene"] == scene and row["strategy"].split(":")[0] == "evos"]


def _baselines_on(summary: Dict[str, Dict[str, Any]], scene: str, stream: Optional[str]) -> List[Dict[str, Any]]:
    """The baselines' rows of a scene on selection stream ``stream`` (None: the default stream)."""
    return [summary[key] for b in BASELINES if (key := f"{scene}|{on_stream(b, stream)}") in summary]


def checks(summary: Dict[str, Dict[str, Any]]) -> List[str]:
    """The targets of the real-capture benchmark, stated as met or missed per scene and EVOS row
    (``evos`` and every ``evos:<variant>``: which one is a method's default depends on the method)."""
    lines = ["", "## Checks", ""]
    for scene in sorted({row["scene"] for row in summary.values()}):
        # A part run on one selection stream only (``uniform:sel-seed=N``, as the GPU check runs) has no
        # default-stream uniform: its plateau and fallback reference are then uniform on its streams.
        uniforms = [row for row in summary.values() if row["scene"] == scene and split_stream(row["strategy"])[0] == "uniform"]
        uniform = summary.get(f"{scene}|uniform") or (uniforms[0] if uniforms else None)
        mine_rows = _evos_rows(summary, scene)
        if uniform is None or not mine_rows:
            continue
        rise = largest_rise([value for row in uniforms for value in row["plateau_rise"]])
        if rise is None:
            lines.append(f"- **{scene}**: uniform plateau: not measured (no evaluation by three quarters of the budget).")
        else:
            read = [flag for row in uniforms for flag in row["plateau_interpolated"]]
            between = (f"; interpolated between evaluations on {sum(read)} of {len(read)} seeds, off by up to "
                       "0.08 dB where measured" if any(read) else "")
            lines.append(f"- **{scene}**: uniform plateau: PSNR rose {rise:+.2f} dB over the last quarter (max over seeds; "
                         f"converged if < 0.2 dB: {'yes' if rise < 0.2 else 'NO'}{between}).")
        baseline_rows = [row for row in summary.values() if row["scene"] == scene and split_stream(row["strategy"])[0] in BASELINES]
        baseline_rows.sort(key=lambda row: (split_stream(row["strategy"])[1] is not None, BASELINES.index(split_stream(row["strategy"])[0])))
        lines += _common_random_number_lines([*baseline_rows, *mine_rows])  # once per scene, not once per row
        for mine in mine_rows:
            # A run on selection stream N is judged against uniform and the baselines on stream N
            # (its step ratios are already uniform-on-N's; see same_stream_uniform).
            stream = split_stream(mine["strategy"])[1]
            reference = summary.get(f"{scene}|{uniform_name(mine['strategy'])}")
            if reference is None:
                stream, reference = None, uniform
            lines += _evos_checks(mine, reference, _baselines_on(summary, scene, stream))
    return lines


def _flagged_seeds(rows: Sequence[Dict[str, Any]], key: str) -> str:
    moved = []
    for row in rows:
        seeds = [seed for seed, other in zip(row.get("seeds", []), row.get(key, [])) if other]
        if seeds:
            moved.append(f"{row['strategy']} seed(s) {', '.join(map(str, seeds))}")
    return "; ".join(moved)


def _common_random_number_lines(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """One line naming every row's seeds that trained on another CPU than their uniform run, and one
    for those whose evaluations touched training where uniform's did not (or the reverse): each caveat
    is the same for every sampler, so it is said once per scene."""
    lines = []
    moved = _flagged_seeds(rows, "other_host_than_uniform")
    if moved:
        lines.append(f"  - {moved} trained on another CPU than their uniform "
                     "run: possibly not on common random numbers with it (kernels can round differently across CPUs: an Intel and "
                     "an AMD host did; two AMD hosts, AVX512 and AVX2, reproduced uniform bit for bit, benchmarks/README.md).")
    changed = _flagged_seeds(rows, "other_evaluation_than_uniform")
    if changed:
        lines.append(f"  - {changed} trained on the other side of the change that keeps evaluations from touching "
                     "training than their uniform run: on common random numbers with it only up to the first evaluation.")
    return lines


def _timed_together(rows: Sequence[Dict[str, Any]]) -> bool:
    return all(all(row.get("timed_with_uniform", [True])) for row in rows)


def _paired(mine: Dict[str, Any], other: Dict[str, Any], key: str):
    """``key``'s values of both rows on the seeds both ran, aligned seed by seed in ``mine``'s
    order (a row that ran fewer seeds, or fewer streams of a report of :func:`streams_as_seeds`,
    is compared on those alone: seeds differ by more than samplers do on fox)."""
    if "seeds" not in mine or "seeds" not in other:
        return mine[key], other[key]
    theirs = dict(zip(other["seeds"], other[key]))
    common = [(s, v) for s, v in zip(mine["seeds"], mine[key]) if s in theirs]
    return [v for _, v in common], [theirs[s] for s, _ in common]


def _evos_checks(mine: Dict[str, Any], uniform: Dict[str, Any], baselines: List[Dict[str, Any]]) -> List[str]:
    """Time is the measure when every compared run trained in its seed's uniform process; otherwise
    steps are, and the lines say so (a time ratio across processes measures the machine's load)."""
    evos = mine["strategy"]
    by_time = _timed_together([mine, *baselines])
    unit, key, note = ("time", "ratio", "") if by_time else (
        "steps", "step_ratio", " (by steps: some of these runs trained in another process than their seed's uniform, "
        "so their times do not compare)")
    t = median_ratio(mine[key])
    if t is None:
        lines = [f"  - {evos} does not reach uniform's final PSNR on the median seed."]
    else:
        lines = [f"  - {evos} reaches uniform's final PSNR in {t:.2f}x uniform's {unit} (median){note}."]
    psnr, ssim = _paired(mine, uniform, "psnr_equal_time"), _paired(mine, uniform, "ssim_equal_time")
    worse = [metric for metric, (a, b) in (("PSNR", psnr), ("SSIM", ssim)) if statistics.mean(a) < statistics.mean(b)]
    untimed = "" if _timed_together([mine]) else " (not comparable: trained in another process than uniform)"
    lines.append(f"    at equal training time{untimed} it is {'worse than uniform in ' + ' and '.join(worse) if worse else 'not worse than uniform in PSNR or SSIM'} "
                 f"({fmt_spread(psnr[0])} vs {fmt_spread(psnr[1])} dB, {fmt_spread(ssim[0], 3)} vs {fmt_spread(ssim[1], 3)}"
                 f"{'' if len(psnr[0]) == len(uniform['psnr_equal_time']) else f', on the {len(psnr[0])} seed(s) it ran'}).")
    # Each baseline against EVOS on the seeds both ran, so that a row with more seeds (or streams)
    # is not judged on draws the other never had.
    paired = {b["strategy"]: _paired(mine, b, key) for b in baselines}
    reached = {b: m for b, (_, theirs) in paired.items() if (m := median_ratio(theirs)) is not None}
    if reached and t is not None:
        best = min(reached, key=reached.get)
        ours, theirs = paired[best]
        on = "" if len(ours) == len(mine[key]) else f" on the {len(ours)} seed(s) both ran"
        mine_there = median_ratio(ours)
        if mine_there is None:
            lines.append(f"    vs the best baseline ({best}, {reached[best]:.2f}x of uniform's {unit}{on}): "
                         f"{evos} never reaches uniform's final there (target >= 15%: missed).")
        else:
            sooner = 1 - mine_there / reached[best]
            gap = f"{100 * sooner:+.0f}% sooner" if sooner >= 0 else f"{-100 * sooner:.0f}% later"
            ours_note = f"; {evos} {mine_there:.2f}x there" if on else ""
            lines.append(f"    vs the best baseline ({best}, {reached[best]:.2f}x of uniform's {unit}{on}{ours_note}): "
                         f"{gap} (target >= 15%: {'met' if sooner >= 0.15 else 'missed'}).")
            if len(ours) > 1:
                spans = [f"{name} {_span(values)}" for name, values in ((evos, ours), (best, theirs))]
                lines.append(f"    95% bootstrap intervals of the two medians over these seeds: {'; '.join(spans)}.")
    elif baselines:
        # EVOS reaching uniform's final where no baseline's median does is sooner than all of them.
        verdict = " (target >= 15%: met, no baseline's median reaches it)" if t is not None and not reached else ""
        lines.append(f"    baselines reaching uniform's final: {', '.join(reached) or 'none'}{verdict}.")
    overhead = max(o + f for o, f in zip(mine["overhead"], mine["refresh"]))
    lines.append(f"    sampler + re-measure overhead {100 * overhead:.2f}% of training time (target <= 5%).")
    return lines


def gap_to_uniform(runs, views: str = "test") -> List[str]:
    """Each strategy minus uniform of the same seed, at every evaluation both made (mean over seeds).

    A final value hides when a sampler pays: on real captures every error-guided sampler's test
    SSIM falls below uniform's early and an annealed one recovers part of it, which only a gap
    measured along the run shows. Pairs are (scene, seed) groups, each run against uniform on its
    own selection stream (:func:`with_uniform`), so seeds on their own random numbers do not blur
    the gap with each other's spread. ``views="train"`` reads the training views
    scored with ``bench_nerf.py --train-views``: a sampler that gains there while it loses on the
    test views fits what does not carry over to new viewpoints. No lines when no run has them.
    """
    psnr, ssim = ("psnr", "ssim") if views == "test" else ("train_psnr", "train_ssim")
    lines = ["", f"## Gap to uniform over training, {views} views: ΔPSNR (dB) / ΔSSIM, mean over seeds (seeds below uniform in SSIM)", ""]
    pairs_by_scene: Dict[str, List[tuple]] = {}
    for r, uniform in with_uniform(runs):
        pairs_by_scene.setdefault(r.scene, []).append((r, uniform))
    for scene in sorted(pairs_by_scene):
        gaps: Dict[str, Dict[int, List[tuple]]] = {}
        for r, uniform in pairs_by_scene[scene]:
            uniform_at = {h["step"]: h for h in uniform.history if ssim in h}
            for h in r.history:
                ref = uniform_at.get(h["step"])
                if ref is not None and ssim in h:
                    gaps.setdefault(r.strategy, {}).setdefault(h["step"], []).append((h[psnr] - ref[psnr], h[ssim] - ref[ssim]))
        if not gaps:
            continue
        steps = sorted({step for by_step in gaps.values() for step in by_step})
        lines += [f"### {scene}", "", "| strategy | " + " | ".join(f"step {s}" for s in steps) + " |", "|---|" + "---|" * len(steps)]
        for strategy, by_step in gaps.items():
            cells = []
            for step in steps:
                pairs = by_step.get(step)
                if not pairs:
                    cells.append("-")
                    continue
                below = sum(d_ssim < 0 for _, d_ssim in pairs)
                cells.append(f"{statistics.mean(p for p, _ in pairs):+.2f} / {statistics.mean(s for _, s in pairs):+.3f} "
                             f"({below}/{len(pairs)})")
            lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines if len(lines) > 3 else []


def gap_per_view(runs) -> List[str]:
    """Each strategy minus uniform of the same seed (and selection stream) on every held-out view at
    the end of the budget (mean over seeds, and on how many seeds it is below uniform in SSIM there).

    A scene's mean over views can hide where a sampler pays: the fox preset scores a third of its
    orbit, and a deficit carried by a few views (a background seen from one side only) says
    something else than one spread over all of them. Views are numbered in the test split's order
    (for nerfstudio-data captures every 8th frame in file-name order: view 1 is frame 0, view 2 frame
    8, ...). No lines when no run kept its per-view scores."""
    lines = ["", "## Gap to uniform per held-out view at the end: ΔPSNR (dB) / ΔSSIM, mean over seeds (seeds below uniform in SSIM)", ""]
    paired = with_uniform(runs)
    for scene in sorted({r.scene for r in runs}):
        gaps: Dict[str, List[List[tuple]]] = {}
        for r, uniform in paired:
            end, ref = r.history[-1], uniform.history[-1]
            if (r.scene != scene or ref["step"] != end["step"]
                    or "view_ssim" not in end or len(end["view_ssim"]) != len(ref.get("view_ssim", []))):
                continue
            per_view = gaps.setdefault(r.strategy, [[] for _ in end["view_ssim"]])
            if len(per_view) != len(end["view_ssim"]):
                continue  # scored on another number of views than this strategy's other seeds
            for view, pair in enumerate(zip(end["view_psnr"], ref["view_psnr"], end["view_ssim"], ref["view_ssim"])):
                per_view[view].append((pair[0] - pair[1], pair[2] - pair[3]))
        if not gaps:
            continue
        views = max(len(v) for v in gaps.values())
        lines += [f"### {scene}", "", "| strategy | seeds | " + " | ".join(f"view {v + 1}" for v in range(views)) + " |",
                  "|---|---|" + "---|" * views]
        for strategy, per_view in gaps.items():
            cells = [f"{statistics.mean(p for p, _ in pairs):+.2f} / {statistics.mean(q for _, q in pairs):+.3f} "
                     f"({sum(q < 0 for _, q in pairs)})" for pairs in per_view]
            lines.append(f"| {strategy} | {len(per_view[0])} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines if len(lines) > 3 else []


def mean_interval(values: Sequence[float], level: float = 0.95):
    """``(mean, low, high)``: the mean and its two-sided Student-t interval (None bounds for one value)."""
    from scipy.stats import t

    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, None, None
    half = t.ppf(0.5 + level / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def paired_with_uniform(runs) -> List[str]:
    """Each strategy's final PSNR and SSIM minus uniform's on the same seed (and selection stream),
    with a 95% interval of the mean difference and how many pairs end at or above uniform.

    "Never worse than uniform" read off point means is a coin toss where a stream alone moves
    uniform by up to 1.9 dB (fox): a mean difference whose interval holds 0 is evidence neither way,
    and the count of pairs below uniform says how often a user would end worse. Pairs are made
    within a (scene, seed) group, so the seed's own spread cancels."""
    pairs: Dict[tuple, List[tuple]] = {}
    for r, ref in with_uniform(runs):
        if ref.history[-1]["step"] != r.history[-1]["step"]:
            continue
        end, ref_end = r.history[-1], ref.history[-1]
        pairs.setdefault((r.scene, r.strategy), []).append((end["psnr"] - ref_end["psnr"], end["ssim"] - ref_end["ssim"]))
    if not pairs:
        return []

    def cell(values, digits):
        mean, low, high = mean_interval(values)
        interval = "" if low is None else f" [{low:+.{digits}f}, {high:+.{digits}f}]"
        return f"{mean:+.{digits}f}{interval} | {sum(v >= 0 for v in values)}/{len(values)}"

    lines = ["", "## Paired with uniform at the end of the budget: mean difference [95% interval], pairs at or above uniform", "",
             "| scene | strategy | pairs | ΔPSNR (dB) | PSNR at or above | ΔSSIM | SSIM at or above |", "|---|---|---|---|---|---|---|"]
    for (scene, strategy), values in sorted(pairs.items()):
        lines.append(f"| {scene} | {strategy} | {len(values)} | {cell([d for d, _ in values], 2)} | "
                     f"{cell([d for _, d in values], 4)} |")
    return lines


def head_to_head(summary: Dict[str, Dict[str, Any]]) -> List[str]:
    """Each EVOS row against each baseline, pair by pair on the seeds (and streams) both ran: who
    reaches uniform's final PSNR in fewer steps, the median of EVOS's steps over the baseline's, a
    two-sided sign test, and the mean end-of-budget difference with its 95% interval.

    The 15% check compares two medians taken over seeds separately, so one lucky stream of either
    sampler moves it. Pairing on the same seed and stream cancels what the pair shares (the model's
    initialisation, uniform's run as the target), and the sign test says whether "sooner" holds more
    often than a coin would give. A run that never reaches uniform's final counts as infinitely slow;
    a pair where neither does is a tie and carries no ratio. Steps, not seconds: the baselines trained
    in other processes than EVOS in the pooled reports."""
    from scipy.stats import binomtest

    lines = ["", "## EVOS against each baseline, pair by pair (same seed and stream): steps to uniform's final PSNR and the end of the budget", "",
             "| scene | EVOS | baseline | pairs | EVOS sooner / later / tie | median EVOS ÷ baseline steps | sign test p | ΔPSNR (dB) | ΔSSIM |",
             "|---|---|---|---|---|---|---|---|---|"]
    found = False
    for scene in sorted({row["scene"] for row in summary.values()}):
        for mine in _evos_rows(summary, scene):
            if "seeds" not in mine:
                continue
            # A run on stream N meets the baselines on stream N.
            for base in _baselines_on(summary, scene, split_stream(mine["strategy"])[1]):
                if "seeds" not in base:
                    continue
                ours, theirs = ([math.inf if v is None else v for v in values] for values in _paired(mine, base, "step_ratio"))
                if not ours:
                    continue
                found = True
                sooner = sum(o < t for o, t in zip(ours, theirs))
                later = sum(o > t for o, t in zip(ours, theirs))
                ratios = [o / t for o, t in zip(ours, theirs) if not (math.isinf(o) and math.isinf(t))]
                median = statistics.median(ratios) if ratios else None
                median_text = ("-" if median is None else "EVOS never" if math.isinf(median)
                               else f"{median:.2f}" if median > 0 else "baseline never")
                p = f"{binomtest(sooner, sooner + later).pvalue:.2g}" if sooner + later else "-"
                cells = []
                for key, digits in (("psnr", 2), ("ssim", 4)):
                    mean, low, high = mean_interval([a - b for a, b in zip(*_paired(mine, base, key))])
                    cells.append(f"{mean:+.{digits}f}" + ("" if low is None else f" [{low:+.{digits}f}, {high:+.{digits}f}]"))
                lines.append(f"| {scene} | {mine['strategy']} | {base['strategy']} | {len(ours)} | {sooner} / {later} / {len(ours) - sooner - later} | "
                             f"{median_text} | {p} | {cells[0]} | {cells[1]} |")
    return lines if found else []


def median_interval(values: Sequence[Optional[float]], level: float = 0.95, resamples: int = 9999):
    """``(median, low, high)`` of ratios over seeds, a never-reached seed counting as infinitely slow;
    the bounds are a percentile bootstrap over seeds (None for fewer than two seeds), inf = never.

    The bounds are read off the bootstrap distribution without interpolation: between a seed that
    reaches uniform's final and one that never does there is no value in between to report."""
    import warnings

    import numpy as np
    from scipy.stats import bootstrap

    data = np.array([math.inf if v is None else v for v in values], dtype=float)
    median = median_ratio(values)  # the one definition of the median the report's other tables use
    median = math.inf if median is None else median
    if data.size < 2:
        return median, None, None
    with warnings.catch_warnings():  # scipy's own interval (unused) meets inf - inf in never-reached seeds
        warnings.simplefilter("ignore", RuntimeWarning)
        spread = bootstrap((data,), np.median, n_resamples=resamples, method="percentile", vectorized=True,
                           random_state=np.random.default_rng(0)).bootstrap_distribution
    low, high = np.quantile(spread, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return median, float(low), float(high)


def _span(values: Sequence[Optional[float]]) -> str:
    _, low, high = median_interval(values)
    return "-" if low is None else f"{_fmt_reach(low)} to {_fmt_reach(high)}"


def _fmt_reach(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:.2f}x"


def median_intervals(summary: Dict[str, Dict[str, Any]]) -> List[str]:
    """Each sampler's median steps to uniform's final PSNR with a 95% bootstrap interval over seeds.

    The 15% target compares two such medians, and a median over five to ten seeds of a sampler
    that either finds a better solution early or never reaches uniform (Soft Mining on fox) can land
    on either mode: the interval says how far another set of seeds could move it. Steps, as in the
    head-to-head table (some baselines trained in other processes). Rows run on one seed have none."""
    lines = ["", "## Steps to uniform's final PSNR: median over seeds with a 95% bootstrap interval (seeds resampled)", "",
             "| scene | strategy | seeds | reach it | median | 95% interval |", "|---|---|---|---|---|---|"]
    found = False
    for row in summary.values():
        values = row.get("step_ratio", [])
        if split_stream(row["strategy"])[0] == "uniform" or len(values) < 2:
            continue
        median, low, high = median_interval(values)
        found = True
        lines.append(f"| {row['scene']} | {row['strategy']} | {len(values)} | {sum(v is not None for v in values)} | "
                     f"{_fmt_reach(median)} | {_fmt_reach(low)} to {_fmt_reach(high)} |")
    return lines if found else []


def halfway_lead(runs) -> List[str]:
    """What reaching uniform's final PSNR in half its steps takes, per (scene, seed).

    A run is at uniform's final PSNR by half the budget exactly when its lead over uniform there
    is at least what uniform still gains in its second half (more steps at a decaying learning
    rate). So the table shows how far a sampler's mid-run lead is from the 0.5x target, in dB,
    rather than only that it missed. Both values are interpolated linearly between evaluations
    (coarse where evaluations are far apart).
    """
    strategies = sorted({r.strategy for r in runs} - {"uniform"})
    by_key = {(r.scene, r.seed, r.strategy): r for r in runs}
    rows = []
    for scene, seed in sorted({(r.scene, r.seed) for r in runs}, key=lambda pair: (pair[0], seed_order(pair[1]))):
        uniform = by_key.get((scene, seed, "uniform"))
        if uniform is None:
            continue
        half = uniform.history[-1]["step"] / 2
        at_half = value_at(uniform.history, "step", half, "psnr")
        cells = []
        for strategy in strategies:
            run = by_key.get((scene, seed, strategy))
            cells.append("-" if run is None else f"{value_at(run.history, 'step', half, 'psnr') - at_half:+.2f}")
        rows.append(f"| {scene} | {seed} | {uniform.history[-1]['psnr'] - at_half:.2f} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return ["", "## Halfway: uniform's gain over its second half against each strategy's lead at half the budget (dB)", "",
            "| scene | seed | uniform gains | " + " | ".join(strategies) + " |", "|---|---|---|" + "---|" * len(strategies), *rows]


def curves(runs) -> List[str]:
    """Test PSNR / SSIM and training seconds at every evaluation, one table per (scene, seed)."""
    lines = ["", "## Curves: test PSNR / SSIM (training seconds) at each evaluation", ""]
    for scene in sorted({r.scene for r in runs}):
        for seed in sorted({r.seed for r in runs if r.scene == scene}, key=seed_order):
            group = [r for r in runs if r.scene == scene and r.seed == seed]
            lines += [f"### {scene}, seed {seed}", "", "| step | " + " | ".join(r.strategy for r in group) + " |",
                      "|---|" + "---|" * len(group)]
            for step in sorted({h["step"] for r in group for h in r.history}):
                cells = []
                for r in group:
                    h = next((h for h in r.history if h["step"] == step), None)
                    cells.append("-" if h is None else f"{h['psnr']:.2f} / {h['ssim']:.3f} ({h['train_seconds']:.0f} s)")
                lines.append(f"| {step} | " + " | ".join(cells) + " |")
            lines.append("")
    return lines


def summary_records(summary: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The list written to ``benchmarks/nerf_real_summary.json``."""
    return [{
        "scene": row["scene"],
        "strategy": row["strategy"],
        "seeds": row["seeds"],
        "final_psnr_mean": statistics.mean(row["psnr"]),
        "final_psnr_std": statistics.stdev(row["psnr"]) if len(row["psnr"]) > 1 else 0.0,
        "final_ssim_mean": statistics.mean(row["ssim"]),
        "time_to_uniform_final_median": median_ratio(row["ratio"]),
        "steps_to_uniform_final_median": median_ratio(row["step_ratio"]),
        "psnr_at_equal_time_mean": statistics.mean(row["psnr_equal_time"]),
        "ssim_at_equal_time_mean": statistics.mean(row["ssim_equal_time"]),
        "uniform_plateau_rise_db": largest_rise(row["plateau_rise"]) if row["strategy"] == "uniform" else None,
        "overhead_share_mean": statistics.mean(o + f for o, f in zip(row["overhead"], row["refresh"])),
    } for row in summary.values()]


def plot(runs, path: Path, title: str) -> None:
    """PSNR and SSIM against training time and against steps, one panel row per scene (seed means)."""
    from matplotlib.figure import Figure

    scenes = sorted({r.scene for r in runs})
    fig = Figure(figsize=(20, 4 * len(scenes)))
    axes = fig.subplots(len(scenes), 4, squeeze=False)
    # One colour per strategy across every scene's row, whichever strategies a scene ran.
    colours = {s: f"C{i % 10}" for i, s in enumerate(dict.fromkeys(r.strategy for r in runs))}
    for row, scene in enumerate(scenes):
        for strategy in dict.fromkeys(r.strategy for r in runs if r.scene == scene):
            group = [r for r in runs if r.scene == scene and r.strategy == strategy]
            steps = sorted(set.intersection(*({h["step"] for h in r.history} for r in group)))
            at = lambda key, s: statistics.mean(next(h[key] for h in r.history if h["step"] == s) for r in group)  # noqa: E731
            for col, (x, y) in enumerate((("train_seconds", "psnr"), ("step", "psnr"), ("train_seconds", "ssim"), ("step", "ssim"))):
                ax = axes[row][col]
                ax.plot([at(x, s) for s in steps], [at(y, s) for s in steps], marker="o", ms=3, label=strategy,
                        color=colours[strategy], lw=2.2 if strategy.startswith("evos") else 1.2)
                ax.set_xlabel("training seconds" if x == "train_seconds" else "step")
                ax.set_ylabel(f"test {y.upper()}")
                ax.set_title(f"{scene}: {y.upper()} vs {'time' if x == 'train_seconds' else 'steps'}")
                ax.grid(alpha=0.3)
        axes[row][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_palette_png(fig, path)


def save_palette_png(fig, path: Path, colours: int = 64) -> None:
    """A palette PNG: about a quarter of matplotlib's RGBA file for the same plot.

    Every benchmark part commits its plot (hundreds under ``benchmarks/``), and the GPU check carries
    the working tree, its wheels and two captures within 64 MiB: at RGBA the plots alone took 28 MB.
    The curves use ten colours plus grey and their anti-aliasing, which 64 colours keep; the fast
    octree keeps a rare line colour that median cut (Pillow's default) merges into the greys."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=colours, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(path, optimize=True)


class _BudgetPair(NamedTuple):
    """One seed of a shorter-budget row: its final, uniform's full-budget final, its time fraction."""

    seed: int
    final: Dict[str, float]
    ref: Dict[str, float]
    time: Optional[float]


def against_full_budget(short, full, ray_share: float = 1.0) -> List[str]:
    """Each strategy's final at a smaller budget against uniform's final at the full budget.

    The in-run crossing point (``ratio`` / ``step_ratio`` above) reads a run whose learning rate
    has not decayed yet; a user who wants to train for less trains a shorter schedule, or fewer
    rays a step (``ray_share``: the short runs' rays per step over the full budget's), as the
    image path's EVOS trains only part of the pixels a step. This table pairs every short run with
    the full-budget uniform run of the same (scene, seed); no lines when none has such a partner.
    Its cost column counts rays trained (steps x rays a step) as a share of the full budget's.

    The two budgets ran in different processes, whose seconds do not compare (this machine's speed
    drifts by up to 40%). The time column therefore divides a short run's seconds by what the full
    budget would have taken at the per-step speed of the short run's own process's uniform run;
    without such a uniform run, or when the rays a step differ (seconds then do not scale with
    steps), it reads "n/a".
    """
    reference = {(r.scene, r.seed): r.history[-1] for r in full if r.strategy == "uniform"}
    short_uniform = {(r.scene, r.seed, r.process): r.history[-1] for r in short if r.strategy == "uniform"}

    def time_fraction(run, ref) -> Optional[float]:
        own = short_uniform.get((run.scene, run.seed, run.process))
        if own is None or not own["train_seconds"] or ray_share != 1.0:
            return None
        return run.history[-1]["train_seconds"] / (own["train_seconds"] * ref["step"] / own["step"])

    pairs: Dict[tuple, List[_BudgetPair]] = {}
    for r in short:
        ref = reference.get((r.scene, r.seed))
        if ref is not None:
            pairs.setdefault((r.scene, r.strategy), []).append(_BudgetPair(r.seed, r.history[-1], ref, time_fraction(r, ref)))
    if not pairs:
        return []
    lines = [
        "| scene | strategy | rays trained | training time (median; at its own process's uniform speed) | final PSNR / SSIM | "
        "uniform's full-budget final | "
        "ΔPSNR per seed | ΔSSIM per seed | seeds at or above it: PSNR, PSNR and SSIM |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (scene, strategy), rows in pairs.items():
        dpsnr = [p.final["psnr"] - p.ref["psnr"] for p in rows]
        dssim = [p.final["ssim"] - p.ref["ssim"] for p in rows]
        rays = statistics.median(ray_share * p.final["step"] / p.ref["step"] for p in rows)
        fractions = [p.time for p in rows if p.time is not None]
        seconds = f"{statistics.median(fractions):.2f}x" if fractions else "n/a"
        if fractions and len(fractions) < len(rows):
            seconds += f" ({len(fractions)}/{len(rows)} seeds)"
        psnr_ok = sum(d >= 0 for d in dpsnr)
        both_ok = sum(dp >= 0 and ds >= 0 for dp, ds in zip(dpsnr, dssim))
        lines.append(
            f"| {scene} | {strategy} | {rays:.2f}x | {seconds} | "
            f"{fmt_spread([p.final['psnr'] for p in rows])} / {fmt_spread([p.final['ssim'] for p in rows], 3)} | "
            f"{fmt_spread([p.ref['psnr'] for p in rows])} / {fmt_spread([p.ref['ssim'] for p in rows], 3)} | "
            + ", ".join(f"s{p.seed} {d:+.2f}" for p, d in zip(rows, dpsnr)) + " | "
            + ", ".join(f"s{p.seed} {d:+.3f}" for p, d in zip(rows, dssim)) + " | "
            f"{psnr_ok}/{len(rows)}, {both_ok}/{len(rows)} |"
        )
    return lines
