"""EVOS vs uniform vs hard mining (and ablations) for ``evos-nerf`` on real and procedural scenes.

    python scripts/bench_nerf.py                          # CPU preset (configs/bench_nerf_cpu.yaml)
    python scripts/bench_nerf.py --preset full            # nerfacto-sized, for a GPU

Every strategy trains the identical reduced nerfacto with the same budget and seed. Strategies of
one (scene, seed) advance in lock-step slices, so this machine's speed drift hits them alike;
after each slice every strategy is evaluated on the whole test split (outside the timers). Each
run draws from its own copy of torch's global random stream (nerfacto's ray samplers use it),
started from the seed, so a run's result does not depend on its place in the strategy list.
Runs are bit-reproducible at a fixed thread count (``--threads``, default 1): the same run on 2
threads rounds differently, and training amplifies that (fern seed 1's uniform: 0.001 dB apart at
step 240, 0.02 dB at the end; EVOS variants, whose pixel ranking turns on tiny error differences,
0.1-0.17 dB at step 240). The report records threads, host and kernel ISA of every part.
Evaluations leave training alone (``evos_nerf.nerfstudio.model.proposal_schedule_kept``), so a run
does not depend on when it was evaluated; result files record it, as runs before did not.
Writes ``benchmarks/nerf_<preset>.md`` and ``.json`` and prints the same tables.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import tyro
import yaml
from nerfstudio.engine.callbacks import TrainingCallbackLocation
from rich.console import Console
from rich.table import Table

from evos_nerf.core.selector import SelectorConfig
from evos_nerf.io import write_json, write_text
from evos_nerf.nerfstudio.presets import Budget, run_config
from evos_nerf.scene import make_scene

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nerf_report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
console = Console()


@dataclass
class Args:
    preset: Optional[str] = None
    """A ``configs/bench_nerf_<preset>.yaml`` (default ``cpu``). With ``--merge``, the preset named in
    the files wins; this only labels files written before result files recorded their preset."""
    shared: Path = ROOT.parent / "shared" / "data"
    out: Path = ROOT / "benchmarks"
    work: Path = Path("/tmp/evos-bench-nerf")
    steps: Optional[int] = None
    """Override the preset's step budget: smoke runs, or a shorter schedule (the learning-rate decay
    and EVOS's ratio schedule end there) for ``scripts/budget_report.py``."""
    rays: Optional[int] = None
    """Override the preset's rays per step: how densely the run samples pixels (nerfacto's default is
    4096; the CPU preset's 512 trains most pixels at most once, which starves per-pixel fitness)."""
    model: Optional[List[str]] = None
    """Override the preset's model settings, ``KEY=VALUE`` each (dotted keys reach nested configs),
    e.g. ``log2_hashmap_size=19``: a diagnostic of how a result depends on the reduced model. Part of
    the budget: runs with other settings never merge with the preset's."""
    scenes: Optional[List[str]] = None
    """Subset of the preset's scenes."""
    captures: Optional[List[Path]] = None
    """Benchmark on these folders instead of the preset's scenes, e.g. a capture of your own: each in
    nerfstudio-data format (``transforms.json``; every 8th frame held out, as for fox and fern, and
    its ``images_2/`` read when it has one, as the preset reads theirs) or blender format
    (``transforms_train.json``). Named by the folder and scored on every held-out view
    (``--test-images`` limits that)."""
    strategies: Optional[List[str]] = None
    seeds: Optional[List[int]] = None
    evals: Optional[int] = None
    """Override the number of evenly spaced evaluations (one at three quarters of the budget, where
    the convergence check reads uniform's PSNR, is always added)."""
    test_images: Optional[int] = None
    """Evaluate on the first N test images only (overrides the preset and its scenes' own settings:
    fox's preset scores 3 of its 9 held-out views)."""
    eval_pixels: int = 0
    """Pilots only: PSNR from this many fixed random pixels per test view instead of whole images
    (about 10x cheaper at 5000; SSIM is then not measured)."""
    renders: Optional[Path] = None
    """Diagnostics: at the last evaluation, save each test view's render, photo and (median) depth
    under this folder (``<scene>_<strategy>_s<seed>/view<N>.npz``), so that where two samplers differ
    on a view can be mapped (``scripts/view_diff.py``). Off in every preset."""
    train_views: int = 0
    """Also score this many training views (evenly spaced) at each evaluation, as ``train_psnr`` /
    ``train_ssim``: a sampler that fits the views it trains on at the cost of held-out views
    scores higher there than on the test split (a diagnostic; off in every preset)."""
    interleave: int = 10
    """Steps each run of a lock-step group trains before the next takes its turn. Short turns share
    a change in this machine's load (another process starting, the CPU's drift) among the group's
    runs, so their training times stay comparable; results do not depend on it (each run keeps its
    own random stream)."""
    threads: int = 1
    """Torch threads per process. Part of a result's identity: the same run on 2 threads rounds
    differently from 1 (every reported group ran on 1; two groups share this 2-core machine)."""
    name: Optional[str] = None
    """Output file stem (default ``nerf_<preset>``, plus the names of scenes the preset does not list,
    as ``--captures`` runs); use it for partial runs of a preset."""
    merge: Optional[List[Path]] = None
    """Train nothing: combine the runs of these result JSONs (partial runs of one preset and
    budget, e.g. one scene or seed per process) into one report under ``--name``."""
    first_views: Optional[int] = None
    """With --merge: re-read every run on its first N test views from the per-view scores it kept,
    so that runs scored on all of fox's 9 held-out views can join parts scored on the preset's 3."""
    colour_corrected: bool = False
    """Report colour-corrected PSNR (each test view forgiven its best affine colour map) in place of
    PSNR everywhere: tells a gap in colour (the appearance embedding test views render with) from
    one in the scene (on fox it kept Soft Mining's gaps: benchmarks/README.md). The result JSON
    keeps both as measured."""
    streams_as_seeds: bool = False
    """Report each (seed, selection stream) pair as its own replicate: ``X+sel-seed=N`` of seed s
    counts as X on seed ``s/N``, against uniform on stream N, in every table, check, median and
    plot. The result JSON keeps every run as trained. One stream per seed under-samples fox, whose
    stream alone moves uniform's final PSNR by up to 1.9 dB."""


@dataclass
class Run:
    scene: str
    strategy: str
    seed: int
    trainer: Any
    step: int = 0
    train_seconds: float = 0.0
    history: Optional[List[Dict[str, float]]] = None
    rng_state: Optional[Dict[str, Any]] = None
    """This run's own global random stream, swapped in while it trains or evaluates."""
    process: str = ""
    """Empty: trained by this process (a merge names each run's result file instead)."""
    host: str = ""
    """Empty: trained on this machine (the file's header names it; a merge keeps each run's part's)."""
    test_images: Optional[int] = None
    """Scored on the first N test views (None: all)."""
    renders_keep_training: bool = True
    """Its evaluations left training alone (every run trained now; a merge keeps each run's own)."""


def current_rng_state() -> Dict[str, Any]:
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def host() -> str:
    """Where a part ran: the CPU kind and the kernel ISA torch dispatches to. The ISA can change
    rounding (torch's unvectorized kernels do; AVX2 and AVX-512 gave identical runs here)."""
    fields = {}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    family = f" family {fields['cpu family']} model {fields['model']}" if "cpu family" in fields and "model" in fields else ""
    return f"{name}{family}, {torch.backends.cpu.get_cpu_capability()}"


def seeded_rng_state(seed: int) -> Dict[str, Any]:
    torch.manual_seed(seed)
    return current_rng_state()


@contextmanager
def own_rng(run: Run):
    """Run with ``run``'s random stream and keep where it got to.

    Lock-step runs share torch's global generator; without this, run k's random draws would
    depend on how many draws runs 1..k-1 made, and two identically configured runs in
    different list positions ended 2 dB apart on fox (seed 0, step 480).
    """
    torch.set_rng_state(run.rng_state["cpu"])
    if run.rng_state["cuda"] is not None:
        torch.cuda.set_rng_state_all(run.rng_state["cuda"])
    try:
        yield
    finally:
        run.rng_state = current_rng_state()


VARIANTS = {
    "crossover": {"crossover": "select"},
    "no-crossover": {"crossover": "none"},
    "no-stale-correction": {"stale_correction": False},
    "mean-prior": {"unvisited_prior": "mean"},
    "crossview-prior": {"unvisited_prior": "crossview"},
    "crossview-pooled": {"unvisited_prior": "crossview-pooled"},
    "crossview-visible": {"unvisited_prior": "crossview-pooled", "crossview_occlusion": 0.1},
    "no-mutation": {"mutation": 0.0},
    "weighted": {"importance_weights": 1.0},
    "half-weighted": {"importance_weights": 0.5},
    "weighted-ramp": {"importance_weights": 1.0, "importance_warmup": 0.5},
    "constant": {"ratio_schedule": "constant"},
    "step": {"ratio_schedule": "step"},
    "cosine": {"ratio_schedule": "cosine"},
    "learnable": {"fitness": "learnable"},
    "relative": {"fitness": "relative"},
    "shrunk": {"shrinkage": 1.0},
    "smooth-crossover": {"crossover": "select", "crossover_prior": "smooth"},
    "fitness-draw": {"pool_draw": "fitness"},
    "annealed-draw": {"pool_draw": "annealed"},
    "fitted-prior": {"prior_strength": "fitted"},
    "live": {"mutation_control": "live"},
    "paper-mutation": {"mutation_base": "current"},
}
"""Ablation suffixes: ``evos:crossover``, ``evos:step+weighted`` (joined with ``+``)."""
NUMERIC_VARIANTS = {
    "ratio": "ratio", "mutation": "mutation", "sm-alpha": "softmining_alpha", "sm-uniform": "softmining_uniform",
    "sm-warmup": "softmining_warmup", "interval": "init_interval", "end-interval": "end_interval",
    "refresh": "refresh_budget", "block": "prior_block", "levels": "prior_levels", "ucb": "prior_bonus",
    "uniform-start": "uniform_start", "trim": "pool_trim", "trim-start": "pool_trim_start", nerf_report.STREAM_VARIANT: "seed",
}
"""Suffixes with a value: ``evos:ratio=0.3``, ``softmining:sm-alpha=0`` (sampling without the weights),
``evos:constant+mutation=0.25`` (alpha, the batch's mutant share at r0, halved; the survivors are
(r - alpha r) N, so at the same ratio the pool widens too, and ``evos:constant+ratio=0.3333+mutation=0.25``
keeps the default's top 25% with a quarter mutants), ``softmining:sm-warmup=60`` (the official
1000 of 20000 steps, scaled to a 1200-step budget),
``evos:step+interval=20+end-interval=10+refresh=410`` (re-rank five times as often, re-measuring
as many rays per step as the default), ``evos:step+block=32`` (the neighbourhood prior's block
size), ``evos:step+block=4+levels=3`` (a 4 / 8 / 16 px hierarchy of blocks), ``evos:step+block=8+fitted-prior``
(its strength fitted per image and level), ``evos:step+trim=0.05`` (the pool after the top 5%,
``pool_trim``; ``+trim-start=0.5`` from half-way through the run), ``evos:step+fitted-prior+ucb=1`` (never-visited pixels
ranked one posterior standard deviation above their block's estimate), ``evos:step+sel-seed=1001``
(the default on another selection stream, the same model, data and seed otherwise: how far the
choice of pixels alone moves a result, the yardstick for every ablation). A setting whose default
is None takes an integer."""


def strategy_overrides(name: str, cfg) -> None:
    """Map a benchmark strategy name (``base[:variant[+variant]]``) to pixel-sampler settings.

    ``topk`` is plain hard mining, a fixed share of the highest errors, on every scene (as
    ``evos-nerf``'s ``auto`` schedule makes it; pinned here so that a benchmark name means one
    thing whatever the method's default). ``topk:step`` names the annealed variant: EVOS's
    survivors without its mutants. For the same reason ``evos`` and ``topk`` start from the
    paper's r0 and alpha (0.5, 0.5), which every recorded part ran, on every method:
    ``evos-nerf-blender``'s own default is ``evos:constant+ratio=0.3333+mutation=0.25``.
    """
    sampler = cfg.pipeline.datamanager.pixel_sampler
    base, _, variants = name.partition(":")
    sampler.strategy = base
    if base in ("evos", "topk"):
        sampler.ratio, sampler.mutation = SelectorConfig.ratio, SelectorConfig.mutation
    if base == "topk":
        sampler.ratio_schedule = "constant"
    for variant in filter(None, variants.split("+")):
        key, has_value, value = variant.partition("=")
        if has_value and key in NUMERIC_VARIANTS:
            try:
                attribute = NUMERIC_VARIANTS[key]
                current = getattr(sampler, attribute)
                setattr(sampler, attribute, (int if current is None else type(current))(float(value)))
            except ValueError:
                raise ValueError(f"strategy variant {variant!r}: {value!r} is not a number") from None
        elif variant in VARIANTS:
            for key, value in VARIANTS[variant].items():
                setattr(sampler, key, value)
        else:
            known = ", ".join([*VARIANTS, *(f"{k}=X" for k in NUMERIC_VARIANTS)])
            raise ValueError(f"unknown strategy variant {variant!r} (known: {known})")
    sampler.validate()


def capture_specs(paths: List[Path]) -> List[Dict[str, Any]]:
    """Scene specs, as a preset's, for ``--captures``: the format read off the folder's transforms
    file, half-size images where the capture has them. Refused before anything trains."""
    specs: Dict[str, Dict[str, Any]] = {}
    for path in paths:
        path = path.expanduser().resolve()
        if not path.is_dir():
            raise SystemExit(f"--captures {path}: not a folder")
        if (path / "transforms.json").is_file():
            spec = {"format": "nerfstudio", "downscale": 2 if (path / "images_2").is_dir() else 1}
        elif (path / "transforms_train.json").is_file():
            spec = {"format": "blender"}
        else:
            raise SystemExit(f"--captures {path}: neither transforms.json (nerfstudio-data) "
                             "nor transforms_train.json (blender) is there")
        if path.name in specs:
            raise SystemExit(f"--captures {path}: a second capture named {path.name} "
                             f"(after {specs[path.name]['source']}); results are named by the folder")
        specs[path.name] = {"name": path.name, "source": str(path), **spec}
    return list(specs.values())


def preset_scenes(preset: Dict[str, Any], args: Args) -> List[Dict[str, Any]]:
    """The scenes to run: ``--captures``, else the preset's (``--scenes`` picks among them)."""
    if args.captures:
        if args.scenes:
            raise SystemExit("--scenes picks among the preset's scenes; with --captures give only the folders to run")
        return capture_specs(args.captures)
    known = [spec["name"] for spec in preset["scenes"]]
    unknown = sorted(set(args.scenes or []) - set(known))
    if unknown:
        raise SystemExit(f"--scenes {' '.join(unknown)}: not in preset {preset['name']} "
                         f"(its scenes: {', '.join(known)}; --captures runs other folders)")
    return [spec for spec in preset["scenes"] if not args.scenes or spec["name"] in args.scenes]


def default_stem(preset: Dict[str, Any], scenes: List[str]) -> str:
    """``nerf_<preset>``, plus the name of every capture (the preset records the ``--captures`` it
    ran, so a merge of their parts knows them) and of any scene the preset does not list: a report
    on other data never writes over the preset's own or its summary JSON, even from a folder that
    shares a preset scene's name."""
    known = {spec["name"] for spec in preset.get("scenes", [])}
    others = [*preset.get("captures", []), *(scene for scene in scenes if scene not in known)]
    return "_".join([f"nerf_{preset['name']}", *dict.fromkeys(others)])


def scene_path(spec: Dict[str, Any], args: Args) -> Optional[Path]:
    if spec["source"] == "procedural":
        return make_scene(args.work / "scenes" / spec["name"], resolution=spec["resolution"],
                          num_train=spec.get("num_train", 40), num_val=4, num_test=spec.get("num_test", 6))
    path = args.shared / spec["source"]
    return path if path.is_dir() else None


def build(spec: Dict[str, Any], scene: Path, strategy: str, seed: int, budget: Budget, args: Args) -> Run:
    name = spec["name"]
    cfg = run_config(scene, args.work / "runs", budget, "evos", seed, experiment=f"{name}-s{seed}",
                     scene_format=spec.get("format", "blender"), downscale=spec.get("downscale", 1))
    cfg.timestamp = strategy.replace(":", "-")
    strategy_overrides(strategy, cfg)
    torch.manual_seed(seed)
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup(test_mode="test")
    # On a GPU the overhead column is then the sampler's own time, not the wait for queued kernels.
    trainer.pipeline.datamanager.selector.exact_timers = True
    views = args.test_images or spec.get("test_images")
    loader = trainer.pipeline.datamanager.fixed_indices_eval_dataloader
    if views and views < len(loader.image_indices):
        loader.image_indices = loader.image_indices[:views]
    else:
        views = None  # every test view, as a run without the setting
    return Run(name, strategy, seed, trainer, history=[], rng_state=seeded_rng_state(seed), test_images=views)


def advance(run: Run, until: int) -> None:
    """Train to ``until`` exactly as Trainer.train does (callbacks included), timing only training."""
    trainer = run.trainer
    while run.step < until:
        start = time.perf_counter()
        trainer.pipeline.train()
        for callback in trainer.callbacks:
            callback.run_callback_at_location(run.step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        trainer.train_iteration(run.step)
        for callback in trainer.callbacks:
            callback.run_callback_at_location(run.step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
        run.train_seconds += time.perf_counter() - start
        run.step += 1


def advance_group(group: List[Run], until: int, interleave: int) -> None:
    """Train every run of a lock-step group to ``until``, round robin, ``interleave`` steps a turn."""
    while any(run.step < until for run in group):
        for run in group:
            with own_rng(run):
                advance(run, min(until, run.step + interleave))


def pixel_subset_psnr(model, dataset, indices, pixels: int) -> float:
    """PSNR over a fixed random subset of each view's pixels (the same subset for every run)."""
    cameras = dataset.cameras.to(model.device)
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for idx in indices:
            gt = dataset[idx]["image"].to(model.device)
            h, w = gt.shape[:2]
            pick = torch.randperm(h * w, generator=torch.Generator().manual_seed(int(idx)))[:pixels]
            coords = torch.stack([pick // w, pick % w], dim=-1).float() + 0.5
            bundle = cameras.generate_rays(camera_indices=int(idx), coords=coords[:, None, :].to(model.device))
            rgb = model.get_outputs_for_camera_ray_bundle(bundle)["rgb"].reshape(-1, 3)
            target = model.renderer_rgb.blend_background(gt.reshape(-1, gt.shape[-1])[pick.to(gt.device)])
            total += float(((rgb - target[:, :3]) ** 2).sum() / 3)
            count += pick.numel()
    model.train()
    return -10.0 * math.log10(total / count)


def pixel_subset_metrics(pipeline, pixels: int) -> Dict[str, float]:
    dm = pipeline.datamanager
    psnr = pixel_subset_psnr(pipeline.model, dm.eval_dataset, dm.fixed_indices_eval_dataloader.image_indices, pixels)
    return {"psnr": psnr, "ssim": float("nan")}


def train_view_metrics(pipeline, views: int, pixels: int = 0) -> Dict[str, float]:
    """PSNR / SSIM on ``views`` evenly spaced training views, scored as the test split is (nerfstudio's
    own loop; the model in eval mode renders every view with the mean appearance embedding); with
    ``pixels``, PSNR on a pixel subset as the test views get it (no SSIM), so a pilot stays cheap."""
    from nerfstudio.data.utils.dataloaders import FixedIndicesEvalDataloader

    dataset = pipeline.datamanager.train_dataset
    indices = sorted({round(i * (len(dataset) - 1) / max(views - 1, 1)) for i in range(views)})
    if pixels:
        return {"train_psnr": pixel_subset_psnr(pipeline.model, dataset, indices, pixels), "train_ssim": float("nan")}
    loader = FixedIndicesEvalDataloader(dataset, image_indices=tuple(indices), device=pipeline.model.device)
    metrics = pipeline.get_average_image_metrics(loader, "train")  # back in train mode after it
    return {"train_psnr": float(metrics["psnr"]), "train_ssim": float(metrics["ssim"])}


def colour_corrected_psnr(rendered: torch.Tensor, gt: torch.Tensor) -> float:
    """PSNR after the affine colour map (3x3 and an offset, least squares) that best takes the render
    to the photo: what a view scores once a global exposure or white-balance offset is forgiven.
    Captures with exposure changes are scored this way too (multinerf's colour-corrected metrics,
    there with an iterated fit); here it tells how much of a gap between samplers is photometric,
    the appearance embedding the test views render with, rather than geometry."""
    x = rendered.reshape(-1, 3).double()
    x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
    y = gt.reshape(-1, gt.shape[-1])[:, :3].double()
    fitted = (x @ torch.linalg.lstsq(x, y).solution).clamp(0, 1)
    return float(-10.0 * torch.log10(((fitted - y) ** 2).mean()))


@contextmanager
def per_view_scores(model, into: Dict[str, List[float]], renders_to: Optional[Path] = None):
    """Keep each test view's PSNR / SSIM while nerfstudio's loop averages them: a report over few
    views can then be re-read on any subset of them (fox scores 3 of its 9 by default). With
    ``renders_to``, also save each view's render, photo and depth there as ``view<N>.npz``."""
    scored = model.get_image_metrics_and_images

    def keep(outputs, batch):
        metrics, images = scored(outputs, batch)
        for key in ("psnr", "ssim"):
            into.setdefault(f"view_{key}", []).append(float(metrics[key]))
        gt, rendered = images["img"].chunk(2, dim=1)  # nerfacto lays them side by side
        into.setdefault("view_cc_psnr", []).append(colour_corrected_psnr(rendered, gt))
        if renders_to is not None:
            renders_to.mkdir(parents=True, exist_ok=True)
            as_bytes = lambda image: (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
            np.savez_compressed(renders_to / f"view{len(into['view_psnr'])}.npz", rgb=as_bytes(rendered),
                                gt=as_bytes(gt[..., :3]), depth=outputs["depth"].squeeze(-1).half().cpu().numpy())
        return metrics, images

    model.get_image_metrics_and_images = keep
    try:
        yield into
    finally:
        del model.get_image_metrics_and_images  # the class's method again


def evaluate(run: Run, pixels: int = 0, train_views: int = 0, renders_to: Optional[Path] = None) -> None:
    pipeline = run.trainer.pipeline
    views: Dict[str, List[float]] = {}
    if pixels:
        metrics = pixel_subset_metrics(pipeline, pixels)
    else:
        with per_view_scores(pipeline.model, views, renders_to):
            metrics = pipeline.get_average_eval_image_metrics(step=run.step)
        views["cc_psnr"] = sum(views["view_cc_psnr"]) / len(views["view_cc_psnr"])  # averaged as nerfstudio averages PSNR
    extra = train_view_metrics(pipeline, train_views, pixels) if train_views else {}
    selector = run.trainer.pipeline.datamanager.selector
    run.history.append({
        "step": run.step,
        "train_seconds": run.train_seconds,
        "psnr": float(metrics["psnr"]),
        "ssim": float(metrics["ssim"]),
        "selection_seconds": selector.selection_seconds,
        "refresh_seconds": selector.refresh_seconds,
        **views,
        **extra,
    })


def views_by_scene(runs) -> str:
    scenes = {r.scene: r.test_images for r in runs}
    return "; ".join(f"{scene}: {nerf_report.fmt_views(views)}" for scene, views in scenes.items())


def merge(args: Args) -> None:
    """One report from several result files of the same budget (each run is kept as measured)."""
    if args.first_views is not None and args.first_views < 1:
        raise SystemExit(f"--first-views must be >= 1 (got {args.first_views})")
    files = nerf_report.read_results(args.merge or [], "--merge", args.first_views)
    for path in sorted(set(args.merge or []) - {f.path for f in files}):
        console.print(f"--merge: skipping {path} (a summary, not a result file)")
    runs = [run for f in files for run in f.runs]
    budgets = [f.data["budget"] for f in files]
    presets = {f.path: f.data["preset"] for f in files}
    threads = {str(f.data.get("threads", "?")) for f in files}
    hosts = nerf_report.label_list([f.data.get("host", "not recorded") for f in files])
    versions = nerf_report.label_list([f.data.get("torch", "not recorded") for f in files])
    if not runs:
        raise SystemExit("--merge: no runs in the given files")
    if any(b != budgets[0] for b in budgets):
        raise SystemExit(f"--merge: the files have different budgets: {budgets}")
    seeds = sorted({r.seed for r in runs})
    preset = {**next(iter(presets.values())), "name": merged_preset_name(args, presets)}
    captures = [name for p in presets.values() for name in p.get("captures", [])]
    if captures:
        preset["captures"] = list(dict.fromkeys(captures))
    write_results(runs, preset, Budget(**budgets[0]), seeds, args, final=True, threads="/".join(sorted(threads)),
                  hosts=hosts, torch_versions=versions)


def merged_preset_name(args: Args, presets: Dict[Path, Dict[str, Any]]) -> str:
    """The one preset the merged files ran; refused when they name different ones (a report of one
    preset must not mix in another's runs)."""
    recorded = {p["name"]: path for path, p in presets.items() if "name" in p}
    if len(recorded) > 1:
        raise SystemExit("--merge: the files come from different presets: "
                         + ", ".join(f"{name} ({path})" for name, path in recorded.items()))
    if not recorded and not (args.preset or args.name):
        # the report's file stem is nerf_<preset>: without a name it would be a made-up one
        raise SystemExit("--merge: the files do not name their preset (written before presets were recorded); "
                         "give --preset or --name")
    return next(iter(recorded), args.preset or "not recorded")


def load_preset(name: str) -> Dict[str, Any]:
    path = ROOT / "configs" / f"bench_nerf_{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem.removeprefix("bench_nerf_") for p in path.parent.glob("bench_nerf_*.yaml"))
        raise SystemExit(f"--preset {name}: no {path.relative_to(ROOT)} (presets: {', '.join(known)})")
    return {"name": name, **yaml.safe_load(path.read_text())}


def evaluation_steps(steps: int, evals: int) -> List[int]:
    """``evals`` evenly spaced evaluations, plus one at three quarters of the budget.

    The convergence check reads uniform's PSNR there. Interpolated between the neighbouring
    evaluations instead (720 and 960 of 1200 steps at five), it was off by -0.02 to +0.08 dB on
    lego_100 seeds 8, 11 and 12: test PSNR is not smooth between evaluations, and the check's
    margin is 0.2 dB."""
    return sorted({steps * k // evals for k in range(1, evals + 1)} | {int(nerf_report.plateau_step(steps))})


def model_overrides(pairs: Optional[List[str]]) -> Dict[str, Any]:
    """``--model KEY=VALUE`` pairs as settings (each VALUE read as YAML: 19, 0.5, off, [48, 24])."""
    out: Dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--model {pair}: expected KEY=VALUE, e.g. log2_hashmap_size=19")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise SystemExit(f"--model {pair}: {value!r} is not a value (a number, a word or a [list])") from None
    return out


def preset_budget(preset: Dict[str, Any], steps: Optional[int] = None, rays: Optional[int] = None,
                  model: Optional[List[str]] = None) -> Budget:
    """The preset's training budget, with ``--steps`` / ``--rays`` / ``--model`` overriding its own."""
    return Budget(steps=steps or preset["steps"], rays=rays or preset["rays"], full=preset.get("full", False),
                  decay_to_budget=preset.get("decay_to_budget", False),
                  model={**preset.get("model", {}), **model_overrides(model)})


def main(args: Args) -> None:
    if args.merge:
        merge(args)
        return
    if args.first_views is not None:
        raise SystemExit("--first-views re-reads a --merge's runs; to score a training run on fewer views use --test-images")
    if args.threads < 1:
        raise SystemExit(f"--threads must be >= 1 (got {args.threads})")
    if args.train_views < 0:
        raise SystemExit(f"--train-views must be >= 0 (got {args.train_views})")
    if args.renders is not None and args.renders.exists() and any(args.renders.iterdir()):
        raise SystemExit(f"--renders: {args.renders} is not empty (renders from another run would be overwritten)")
    for flag, value in (("--steps", args.steps), ("--rays", args.rays), ("--interleave", args.interleave)):
        if value is not None and value < 1:
            raise SystemExit(f"{flag} must be >= 1 (got {value})")
    torch.set_num_threads(args.threads)
    preset = load_preset(args.preset or "cpu")
    budget = preset_budget(preset, args.steps, args.rays, args.model)
    try:  # a misspelt --model key stops here, not in the first group after other groups trained
        run_config(Path("."), args.work, budget, scene_format="nerfstudio")
    except ValueError as error:
        raise SystemExit(f"--model: {error}") from None
    evals = args.evals or preset.get("evals", 6)
    strategies = args.strategies or preset["strategies"]
    seeds = args.seeds or preset["seeds"]
    runs: List[Run] = []
    specs = preset_scenes(preset, args)
    if args.captures:
        preset = {**preset, "captures": [spec["name"] for spec in specs]}
    for spec in specs:
        if not args.captures:
            spec = {**spec, "test_images": nerf_report.preset_test_images(preset, spec["name"])}
        scene = scene_path(spec, args)
        if scene is None:
            console.print(f"[yellow]skipping {spec['name']}: {args.shared / spec['source']} not found[/yellow]")
            continue
        for seed in seeds:
            group = [build(spec, scene, s, seed, budget, args) for s in strategies]
            schedule = evaluation_steps(budget.steps, evals)
            for until in schedule:
                advance_group(group, until, args.interleave)
                for run in group:
                    with own_rng(run):
                        renders_to = None
                        if args.renders is not None and until == schedule[-1]:
                            renders_to = args.renders / f"{spec['name']}_{run.strategy}_s{seed}"
                        evaluate(run, args.eval_pixels, args.train_views, renders_to)
                console.print(f"{spec['name']} seed {seed} step {until}: " + ", ".join(
                    f"{r.strategy} {r.history[-1]['psnr']:.2f} dB" for r in group))
                if until < schedule[-1]:  # a stop mid-group (a GPU lease's deadline) keeps the curves so far
                    write_results(runs + group, preset, budget, seeds, args, final=False)
            runs += group
            for run in group:
                run.trainer = None  # free memory
            write_results(runs, preset, budget, seeds, args, final=False)  # partial results survive a stop
    if not runs:
        console.print("[red]no scene available[/red]")
        sys.exit(2)
    write_results(runs, preset, budget, seeds, args, final=True)


def write_results(runs: List[Run], preset: Dict[str, Any], budget: Budget, seeds: List[int], args: Args,
                  final: bool, threads: Optional[str] = None, hosts: Optional[str] = None,
                  torch_versions: Optional[str] = None) -> None:
    """``<stem>.md`` (tables, checks, curves), ``<stem>.json`` (every history), ``<stem>.png`` (curves);
    with ``summary_json`` in the preset, also that file (the per-(scene, strategy) summary list).

    ``threads``, ``hosts`` and ``torch_versions`` label a merge with its parts' own: the merging
    machine's torch is not the one a GPU part trained with."""
    threads = threads or str(torch.get_num_threads())
    hosts = hosts or host()
    torch_versions = torch_versions or torch.__version__
    trained = runs
    if args.colour_corrected:
        runs = nerf_report.colour_corrected(runs)
    if args.streams_as_seeds:
        runs = nerf_report.streams_as_seeds(runs)
        seeds = sorted({r.seed for r in runs}, key=nerf_report.seed_order)
    summary = nerf_report.summarise(runs)
    stem = args.name or default_stem(preset, [run.scene for run in trained])
    header = (f"# NeRF benchmark, preset `{preset['name']}`\n\n{budget.steps} steps x {budget.rays} rays, reduced nerfacto "
              f"(full={budget.full}, model overrides {budget.model or 'none'}, learning-rate decay to the budget: "
              f"{budget.decay_to_budget}), seeds {seeds}, torch {torch_versions}, {threads} thread(s) per process, host {hosts}. "
              f"Scored on {views_by_scene(runs)}. Mean ± std over seeds; time and step ratios are medians over seeds. "
              f"{'PSNR is colour-corrected: each test view is forgiven the affine colour map that best takes its render to the photo. ' if args.colour_corrected else ''}"
              f"{'Seeds are (seed, selection stream) pairs, seed/stream, each against uniform on its own stream. ' if args.streams_as_seeds else ''}"
              "Times are training seconds "
              "(selection, forward, backward, optimizer step; evaluation excluded). Equal time: each strategy's "
              "curve interpolated at the shortest final training time of its (scene, seed) group.\n\n"
              f"![curves]({stem}.png)")
    text = "\n".join([header, "", *nerf_report.table(summary), *nerf_report.checks(summary), *nerf_report.paired_with_uniform(runs),
                      *nerf_report.head_to_head(summary), *nerf_report.median_intervals(summary), *nerf_report.gap_to_uniform(runs),
                      *nerf_report.gap_to_uniform(runs, views="train"), *nerf_report.gap_per_view(runs), *nerf_report.halfway_lead(runs),
                      *nerf_report.curves(runs)])
    table = Table(title=f"NeRF benchmark ({preset['name']})")
    for col in ("scene", "strategy", "test PSNR", "SSIM", "train s", "to uniform's final (time)", "(steps)"):
        table.add_column(col)
    for row in summary.values():
        table.add_row(row["scene"], row["strategy"], nerf_report.fmt_spread(row["psnr"]), nerf_report.fmt_spread(row["ssim"], 3),
                      nerf_report.fmt_spread(row["seconds"], 0), nerf_report.fmt_ratio(row["ratio"]), nerf_report.fmt_ratio(row["step_ratio"]))
    if final:
        console.print(table)
        console.print("\n".join(nerf_report.checks(summary)))
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / f"{stem}.md", text if final else text + "\n(partial: the run is still going)\n")
    write_json(args.out / f"{stem}.json", {
        "preset": preset, "budget": vars(budget), "threads": threads, "host": hosts, "torch": torch_versions,
        "summary": summary, "complete": final,
        "streams_as_seeds": args.streams_as_seeds, "colour_corrected": args.colour_corrected,
        "runs": [{"scene": r.scene, "strategy": r.strategy, "seed": r.seed, "history": r.history,
                  **({"process": r.process} if r.process else {}),
                  **({"host": r.host} if r.host else {}), "test_images": r.test_images,
                  "renders_keep_training": r.renders_keep_training} for r in trained],
    })
    nerf_report.plot(runs, args.out / f"{stem}.png", f"NeRF benchmark {preset['name']}: test PSNR / SSIM (mean over seeds)")
    if final and preset.get("summary_json"):
        # A part run (--name) keeps its own summary; only the preset's report owns the preset's file.
        summary_name = preset["summary_json"] if stem == f"nerf_{preset['name']}" else f"{stem}_summary.json"
        write_json(args.out / summary_name, nerf_report.summary_records(summary))
    console.print(f"wrote {args.out / f'{stem}.md'}")


if __name__ == "__main__":
    main(tyro.cli(Args))
