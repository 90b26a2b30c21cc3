"""The per-ray selection loop in one framework-free object, shaped like a nerfacc estimator.

Three verbs, called by whatever trains rays (the nerfstudio pipeline, the benchmarks, the tests):

    selector.maybe_evolve(step, measure)   # once per step, first: controls, key iterations
    selection = selector.select(batch_size) # which pixels (and loss weights) this step
    selector.observe(selection.flat, errors, step)  # per-ray errors of the rays just trained

It owns the fitness store, the selection RNG, the live controls, the key-iteration schedule, the
candidate pool, the mutation scale of sharded runs and the read-out statistics. It is the one place
where nerfstudio's 0-based steps become EVOS's 1-based iterations (``t = step + 1``: the key rule
``t mod I(t) == 1`` makes the first step a key iteration).

Ratios mean what they mean on the image path (``evos_nerf.core.evolution``): ``ratio`` r_t is the
share of all pixels in the population EVOS trains on, ``mutation`` alpha makes m = alpha * r0 of
them mutants. A ray batch draws B rays uniformly from that population (see ``evos_nerf.core.pool``).
"""

from __future__ import annotations

import math
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Dict, Iterator, List, Literal, Optional, Tuple, Union, get_args

import torch
from rich.console import Console
from torch import Tensor, nn

from evos_nerf import distributed
from evos_nerf.core import schedules
from evos_nerf.core.crossview import CrossViewErrors, PinholeViews
from evos_nerf.core.fitness_stats import summarise
from evos_nerf.core.importance import ErrorMap, SoftMining
from evos_nerf.core.live_hardness import LiveHardness, loss_share_mutants
from evos_nerf.core.neighbourhood import BlockPrior
from evos_nerf.core.pool import POOL_CANDIDATES, CandidatePool, Importance, PoolDraw, live_importance, rank_pixel_mask
from evos_nerf.core.selection import CrossoverMethod
from evos_nerf.core.sharding import mutant_count, mutation_scale
from evos_nerf.core.store import CROSSVIEW_PRIORS, CrossoverPrior, Fitness, FitnessStore, UnvisitedPrior
from evos_nerf.errors import UserInputError

Strategy = Literal["evos", "uniform", "topk", "staleness", "edges", "errormap", "softmining"]
POOL_STRATEGIES = ("evos", "topk", "staleness", "edges")
RatioSchedule = Union[Literal["auto"], schedules.SampleRatioSchedule]

console = Console()

MeasureFn = Callable[[Tensor], Tensor]
"""[R, 3] absolute (camera, y, x) -> [R] per-ray squared error, measured without gradients."""


@dataclass
class SelectorConfig:
    """How rays are chosen. The nerfstudio sampler config inherits these as CLI flags."""

    strategy: Strategy = "evos"
    """evos; uniform (nerfacto's default); errormap (instant-ngp's error-map importance sampling);
    softmining (Soft Mining, CVPR 2024: importance sampling with importance-weighted loss); topk (hard
    mining: top error, no crossover, no mutation); staleness (coverage control: longest-untrained
    first); edges (edge-prior control: ground-truth Laplacian only)."""
    ratio: float = 0.5
    """r0: share of all training pixels in the population EVOS trains on (fittest + mutants)."""
    ratio_schedule: RatioSchedule = "constant"
    """How r_t grows: constant, step (10 stages up to 1), linear or cosine. Growing r_t anneals
    selection toward uniform (at r_t = 1 every pixel is in the population). auto: step for evos,
    constant for every other strategy, so that topk stays plain hard mining (a fixed share of the
    highest errors) rather than EVOS without mutants. ``evos-nerf`` (real captures) defaults to
    auto, ``evos-nerf-blender`` to constant (README, NeRF benchmark)."""
    mutation: float = 0.5
    """alpha: mutants are m = alpha * r0 of all pixels, so alpha is the batch's mutant share at r0."""
    end_mutation: Optional[float] = None
    """alpha at the last step (None: same as ``mutation``)."""
    mutation_schedule: schedules.MutationSchedule = "constant"
    mutation_base: schedules.MutationBase = "initial"
    """initial: m = alpha * r0 (official code); current: m = alpha * r_t (paper text)."""
    mutation_control: Literal["fixed", "live"] = "fixed"
    """evos: how a batch splits between the pool and its mutants. fixed: the schedules' |M_t| / |Z_t|
    (the paper). live: each side's share of the batch is its share of the training loss over the last
    key interval, from how much harder the pool's trained rays were than the mutants
    (``evos_nerf.core.live_hardness``): strong selection while the pool is much harder than chance,
    a near-uniform draw once it is not. Until the first interval is measured, fixed."""
    crossover: CrossoverMethod = "none"
    """Frequency-guided crossover of error and edge-weighted error: select, add, none. Off by default
    on rays because it has not earned its cost there: at equal random streams it moved test PSNR by
    at most 0.07 dB on fern and fox (step 480) and 0.01x in steps on the synthetic scenes, while it
    costs a second ranking pass over every pixel at each key iteration (benchmarks/README.md,
    "Findings in full")."""
    crossover_prior: CrossoverPrior = "edges"
    """The crossover's second parent (with ``crossover`` select or add): edges weights each error by the
    ground truth's squared Laplacian (the paper's high-frequency parent); smooth by SSIM's sensitivity
    1 / (2 s^2 + C2), s^2 the local variance in SSIM's window, so that the second parent ranks pixels
    by the SSIM their error costs (flat regions) while the first ranks them by PSNR's squared error.
    On fox and fern it did not recover SSIM (benchmarks/README.md, "Findings in full"), so crossover
    stays off."""
    stale_correction: bool = True
    """Rescale cached errors by how much the mean training error fell since they were measured."""
    fitness: Fitness = "error"
    """error: a pixel's cached error (the paper); learnable: only the part of it that falls with
    training, from a per-image fit over uniformly drawn measurements (``evos_nerf.core.learnable``;
    +1 byte per pixel). Aimed at real captures' persistent error: exposure, blur, pose noise.
    relative: a pixel's error over its image's mean error, so views rank their own hard pixels
    and a view-wide error level (blur, exposure, pose error) no longer draws the pool to that view."""
    unvisited_prior: UnvisitedPrior = "neighbourhood"
    """Fitness of never-visited pixels: neighbourhood (their measured block neighbours, shrunk
    toward their image's mean), mean (the global mean error), or crossview (evos and topk: the
    neighbourhood prior with one more level, the errors of the rays trained since the last key
    iteration projected from their depth into the other training cameras' blocks; the error that
    several views see is the scene's, which training can take away: ``evos_nerf.core.crossview``),
    or crossview-pooled (the same readings counted as measurements of the block, beside its own)."""
    crossview_occlusion: Optional[float] = None
    """crossview priors: drop a reading in a camera where its point lies more than this share deeper
    than the deepest surface that camera's own trained rays found in the block (the point is hidden
    there, e.g. an object's far side); None keeps every reading (``evos_nerf.core.crossview``)."""
    prior_block: int = 16
    """Block size in pixels for the neighbourhood prior (its finest, with ``prior_levels`` > 1)."""
    prior_levels: int = 1
    """Levels of the neighbourhood prior: 1 shrinks each block toward its image's mean; L > 1 shrinks
    it toward the block twice its size, that one toward the next, and so on for L sizes
    (``evos_nerf.core.neighbourhood``), so that a sparse fine block falls back to its neighbourhood
    (an ablation: not sooner than one 16 px level at every density, benchmarks/README.md)."""
    prior_strength: Literal["one", "fitted"] = "one"
    """How far a block's measurements are trusted over its parent's (the coarser block, or the image):
    one pseudo-observation at the parent, or ``fitted`` per image and level from the measured spread
    of errors inside blocks and of block means inside their parent (empirical Bayes,
    ``evos_nerf.core.neighbourhood``), so that the prior follows the density of measurements."""
    prior_bonus: float = 0.0
    """c: rank never-visited pixels at their block's estimate plus c posterior standard deviations of
    it (an upper confidence bound, as in a bandit), so that a sparse block whose few measurements are
    high is not shrunk out of the pool before it is tried again (``evos_nerf.core.neighbourhood``).
    0 ranks them at the estimate. With ``shrinkage`` > 0 the bonus is part of the block estimate that
    visited pixels are shrunk toward as well (the two have not been run together)."""
    shrinkage: float = 0.0
    """Pseudo-observations k at a visited pixel's prior (its block's estimate with the neighbourhood
    prior, the global mean with the mean prior) blended with its one cached error: (e + k B) / (1 + k).
    0 ranks each visited pixel by its own error (the paper); evos only."""
    pool_trim: float = 0.0
    """evos: share of the valid pixels at the very top of the ranking left out of the pool. They stay
    among the pixels mutants are drawn from, so they are trained at the mutants' near-uniform rate,
    not starved. A trimmed ranking in the spirit of RobustNeRF (Sabour et al., CVPR 2023), whose
    trimmed least squares drops the highest residuals as outliers: on a real capture the very top of
    the error is where blur, pose error and transient objects sit, which training cannot take away,
    and an error-ranked pool spends its density there. 0 keeps the fittest (the paper). Needs
    ``crossover`` none (the crossover's two parents have no single top to trim)."""
    pool_trim_start: float = 0.0
    """Share of the run before ``pool_trim`` applies (from the first key iteration at or after it).
    With half of the top band trimmed at random (32 px blocks) and half kept, the kept half's error
    fell faster than the trimmed half's in about the first half of a 1200-step run, on fern and fox
    alike, and no faster afterwards (benchmarks/diagnostics/top_band_s66): the pool's density on the
    top of the ranking pays while the field is coarse, not later. 0 trims from the first ranking."""
    refresh_budget: Optional[int] = None
    """Rays re-measured (no-grad) at each key iteration: the stalest members of the pool. None: one
    training batch, so the cost stays a fixed share of training whatever the batch size."""
    pool_draw: PoolDraw = "uniform"
    """How each step draws the pool's members: uniform (EVOS: the pool is the population S_t), or
    fitness: in proportion to the root of each member's live cached error (Soft Mining's draw, inside
    EVOS's pool, beside its uniform mutants and its annealing), by sampling-importance-resampling
    from ``pool_candidates`` x the members needed. Trained rays refresh their errors every step, so
    the draw follows errors between key iterations. annealed: the same with the importance to the
    power (1 - r_t) / (1 - r0), so that as the ratio schedule anneals the pool toward every pixel,
    the draw inside it anneals toward uniform too (with a constant ratio it is fitness). Only with
    ``fitness`` error and without ``importance_weights``."""
    pool_candidates: int = POOL_CANDIDATES
    """pool_draw fitness or annealed: uniform candidates per drawn member (cost per step; larger is closer to
    the exact proportional draw over the whole pool)."""
    importance_weights: float = 0.0
    """Exponent a of the loss weight (M q)^-a of each ray drawn with probability q among M pixels:
    0 trains on the selected pixels as they are (EVOS), 1 is unbiased importance sampling."""
    importance_warmup: float = 0.0
    """Share of the run over which the weight exponent ramps from 0 to ``importance_weights``
    (early steps biased toward hard pixels, later ones unbiased; 0 = no ramp)."""
    init_interval: int = 100
    """Key-iteration interval at the first step (lin_dec schedule, in steps)."""
    end_interval: int = 50
    """Key-iteration interval at the last step."""
    key_schedule: schedules.KeyIterationSchedule = "lin_dec"
    errormap_uniform: float = 0.5
    """errormap: share of positions drawn uniformly inside the chosen image (instant-ngp: 0.5)."""
    errormap_window: int = 128
    """errormap: steps summed into the first map; each later window is 1.5x longer (instant-ngp)."""
    softmining_alpha: float = 0.8
    """softmining: final weight exponent (the official code: 0.8 on LLFF, 0.6 on NeRF-synthetic)."""
    softmining_uniform: float = 0.1
    """softmining: share of each batch drawn uniformly (the official code's minpct)."""
    softmining_warmup: int = 1000
    """softmining: steps over which the weight exponent ramps from 0 to alpha."""
    softmining_refresh: int = 10
    """softmining: steps between rebuilds of the sampling distribution from the cached errors."""
    uniform_start: int = 0
    """Steps drawn uniformly, exactly as the uniform sampler draws them, before the strategy takes
    over: a diagnostic (on fox, Soft Mining's first batch differs from uniform's and its result
    swings by about a dB from seed to seed; this isolates what the first batches decide)."""
    fitness_dtype: Literal["float16", "float32"] = "float16"
    """Storage of the per-pixel fitness (2 bytes per pixel by default; float32 costs 2 more)."""
    seed: Optional[int] = None
    """Selection RNG seed; None uses the trainer's --machine.seed (+ rank)."""

    @property
    def neighbourhood_prior(self) -> BlockPrior:
        """The neighbourhood prior's block sizes, fine to coarse, and its strength."""
        sizes = tuple(self.prior_block * 2**level for level in range(self.prior_levels))
        return BlockPrior(sizes, "fitted" if self.prior_strength == "fitted" else 1.0, self.prior_bonus)

    def validate(self, prefix: str = "") -> "SelectorConfig":
        """One line naming the flag for every out-of-range setting."""
        if self.strategy not in get_args(Strategy):  # tyro checks the command line; Python callers get this
            raise UserInputError(f"{prefix}strategy must be one of {', '.join(get_args(Strategy))}, got {self.strategy!r}")
        schedules.check_ratio(f"{prefix}ratio", self.ratio)
        schedules.check_ratio(f"{prefix}mutation", self.mutation, allow_zero=True)
        if self.end_mutation is not None:
            schedules.check_ratio(f"{prefix}end-mutation", self.end_mutation, allow_zero=True)
        for name in ("errormap_uniform", "softmining_uniform"):
            schedules.check_ratio(prefix + name.replace("_", "-"), getattr(self, name), allow_zero=True)
        positive = ("init_interval", "end_interval", "prior_block", "prior_levels", "errormap_window",
                    "softmining_refresh", "pool_candidates")
        for name in positive:
            if getattr(self, name) < 1:
                raise UserInputError(f"{prefix}{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.refresh_budget is not None and self.refresh_budget < 0:
            raise UserInputError(f"{prefix}refresh-budget must be >= 0, got {self.refresh_budget}")
        non_negative = ("uniform_start", "softmining_warmup", "importance_weights", "importance_warmup", "softmining_alpha", "shrinkage",
                        "prior_bonus", "crossview_occlusion")
        for name in non_negative:
            value = getattr(self, name)
            if value is not None and not (value >= 0 and math.isfinite(value)):  # None: an optional one left off
                raise UserInputError(f"{prefix}{name.replace('_', '-')} must be a finite number >= 0, got {value}")
        if self.unvisited_prior == "crossview-pooled" and (self.prior_strength == "fitted" or self.prior_bonus > 0):
            # The readings are pooled into a block's sums and counts, not into the spread these fit.
            raise UserInputError(f"{prefix}unvisited-prior crossview-pooled does not combine with "
                                 f"{prefix}prior-strength fitted or {prefix}prior-bonus > 0")
        if self.crossview_occlusion is not None and self.unvisited_prior not in CROSSVIEW_PRIORS:
            raise UserInputError(f"{prefix}crossview-occlusion needs {prefix}unvisited-prior crossview or crossview-pooled, "
                                 f"got {self.unvisited_prior}")
        if not (0.0 <= self.pool_trim < 1.0):
            raise UserInputError(f"{prefix}pool-trim must be in [0, 1), got {self.pool_trim}")
        if self.pool_trim > 0 and (self.strategy != "evos" or self.crossover != "none"):
            raise UserInputError(f"{prefix}pool-trim needs {prefix}strategy evos and {prefix}crossover none "
                                 f"(got {self.strategy}, crossover {self.crossover})")
        if not (0.0 <= self.pool_trim_start < 1.0):
            raise UserInputError(f"{prefix}pool-trim-start must be in [0, 1), got {self.pool_trim_start}")
        if self.pool_trim_start > 0 and self.pool_trim == 0:
            raise UserInputError(f"{prefix}pool-trim-start needs {prefix}pool-trim > 0")
        if self.mutation_control == "live" and self.strategy != "evos":
            raise UserInputError(f"{prefix}mutation-control live needs {prefix}strategy evos (the strategy with "
                                 f"mutants), got {self.strategy}")
        if self.pool_draw not in ("uniform", "fitness", "annealed"):
            raise UserInputError(f"{prefix}pool-draw must be uniform, fitness or annealed, got {self.pool_draw!r}")
        if self.pool_draw != "uniform" and self.fitness != "error":
            # The draw weighs members by their cached error; it does not model the other fitnesses.
            raise UserInputError(f"{prefix}pool-draw {self.pool_draw} needs {prefix}fitness error, got {self.fitness}")
        if self.pool_draw != "uniform" and self.importance_weights > 0:
            # The weights assume a uniform draw inside the pool: with this draw they would be wrong.
            raise UserInputError(
                f"{prefix}pool-draw {self.pool_draw} does not combine with {prefix}importance-weights > 0"
            )
        return self


@dataclass
class SelectorControls:
    """Settings a user may change while training (the viewer's EVOS panel). They take effect on
    the next step; distributed runs broadcast rank 0's values every step."""

    ratio: float
    mutation: float
    paused: bool = False
    """Fall back to uniform sampling (fitness is still recorded)."""

    def to_tensor(self) -> Tensor:
        return torch.tensor([self.ratio, self.mutation, float(self.paused)], dtype=torch.float64)

    def load_tensor(self, t: Tensor) -> None:
        self.ratio, self.mutation, self.paused = float(t[0]), float(t[1]), bool(t[2] > 0.5)


@dataclass
class Selection:
    """One step's rays."""

    flat: Tensor
    """Flat pixel indices into the store (local to this rank's shard). On the generator's device
    (the host) for every strategy but softmining, whose draw runs on the store's device."""
    weights: Optional[Tensor]
    """Per-ray loss weights, or None for an unweighted mean."""
    num_mutants: int
    """Rays drawn uniformly from outside the pool (all of them when sampling uniformly)."""
    uniform: Optional[Tensor] = None
    """[B] bool, all True when every ray was drawn uniformly over all valid pixels (uniform phases);
    None otherwise (pool draws, whose mutants come from outside the pool, and importance samplers)."""


def camera_key(kind: str, camera: int) -> str:
    """Checkpoint key of one camera's per-pixel state, e.g. ``fitness/cam00042``."""
    return f"{kind}/cam{camera:05d}"


def rank_key(name: str, rank: int) -> str:
    """Checkpoint key of one rank's own state, e.g. ``generator/rank1``."""
    return f"{name}/rank{rank}"


_CAMERA_KEY = re.compile(r"/cam(\d+)$")
_RANK_KEY = re.compile(r"/rank(\d+)(/|$)")


def key_camera(key: str) -> Optional[int]:
    match = _CAMERA_KEY.search(key)
    return int(match.group(1)) if match else None


def key_rank(key: str) -> Optional[int]:
    match = _RANK_KEY.search(key)
    return int(match.group(1)) if match else None


def _text(value: str) -> Tensor:
    return torch.tensor(list(value.encode()), dtype=torch.uint8)


def _untext(value: Tensor) -> str:
    return bytes(value.tolist()).decode()


class RaySelector(nn.Module):
    """Chooses training rays for one store (one rank's shard in distributed runs).

    An ``nn.Module`` with no parameters and no persistent state: the store's buffers travel with
    ``.to()``; checkpoints take ``sharded_state`` (one key per camera, so any world size can load
    them) instead of the module's state dict.
    """

    def __init__(
        self,
        config: SelectorConfig,
        store: FitnessStore,
        batch_size: int,
        generator: torch.Generator,
        total_steps: int = 30000,
        collectives: ModuleType = distributed,
        views: Optional[PinholeViews] = None,
    ) -> None:
        """``views``: every training camera (all ranks'), which the crossview prior projects into."""
        super().__init__()
        self.config = config.validate()
        if config.fitness == "learnable" and store.uniform is None:
            raise ValueError("the learnable-error fitness needs a FitnessStore(track_uniform=True)")
        self.store = store
        self.batch_size = int(batch_size)
        self.generator = generator
        self.total_steps = max(1, int(total_steps))
        self.comm = collectives
        self.controls = SelectorControls(config.ratio, config.mutation)
        self.step = 0
        """The step being trained (set by maybe_evolve)."""
        self.pool: Optional[CandidatePool] = None
        self.pool_ratio: Optional[float] = None
        """Ratio control the pool was built with (a changed control forces a re-rank)."""
        self.last_key_step = -1
        self.balance = float("nan")
        """Crossover balance p of the last ranking."""
        self.mutation_scale = 1.0
        """Factor on this rank's mutant count that keeps mutation uniform over all shards."""
        self.num_valid_total = 0
        self.num_unselected_total = 0
        self.statistics: Dict[str, float] = {}
        """Read-outs for the viewer and loggers, refreshed at key iterations (over all ranks)."""
        self.histogram: Optional[Tuple[Tensor, Tensor]] = None
        """(counts, fitness bin edges) from the last key iteration, over all ranks."""
        self.selection_seconds = 0.0
        """Time spent choosing pixels, writing fitness back and ranking (the sampler's overhead)."""
        self.refresh_seconds = 0.0
        """Time spent re-measuring stale pixels at key iterations (extra forward passes)."""
        self.exact_timers = False
        """On a CUDA store, wait for the GPU before and after each timed call (benchmarks set this).
        Without it the first host read inside a call (an index copy, a count) waits for the
        previous step's queued backward and optimizer kernels, and that wait lands in
        ``selection_seconds``; with it the timers hold the sampler's own work, at the price of the
        overlap between host and GPU inside the timed calls. No effect on a CPU store."""
        self.last_selection: Optional[Selection] = None
        self.errormap = ErrorMap(store, batch_size, config.errormap_uniform, config.errormap_window) \
            if config.strategy == "errormap" else None
        self.softmining = SoftMining(store, config.softmining_alpha, config.softmining_uniform, config.softmining_warmup) \
            if config.strategy == "softmining" else None
        self._softmining_built_at: Optional[int] = None
        self.live = LiveHardness() if config.strategy == "evos" else None
        """Pool vs mutant error of the trained rays, per key interval (the ``pool_hardness`` read-out)."""
        self.crossview: Optional[CrossViewErrors] = None
        if config.unvisited_prior in CROSSVIEW_PRIORS and config.strategy in ("evos", "topk"):
            if views is None:
                raise ValueError("the crossview prior needs the training cameras (RaySelector(views=...))")
            self.crossview = CrossViewErrors(views, config.prior_block, store.fitness.device, config.crossview_occlusion)

    @contextmanager
    def _timed(self, timer: str) -> Iterator[None]:
        """Add the block's wall time to the float attribute ``timer`` (see ``exact_timers``)."""
        self._wait_for_device()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._wait_for_device()
            setattr(self, timer, getattr(self, timer) + time.perf_counter() - start)

    def _wait_for_device(self) -> None:
        if self.exact_timers and self._store_on_cuda():
            torch.cuda.synchronize(self.store.fitness.device)

    def _store_on_cuda(self) -> bool:
        return self.store.fitness.is_cuda

    # -- set-up ----------------------------------------------------------------------------------
    def initialise(self, images, masks=None, names=None) -> None:
        """Image source (edge prior) and valid mask from the training images; before loading a checkpoint."""
        c = self.config
        smooth = c.strategy == "evos" and c.crossover != "none" and c.crossover_prior == "smooth"
        self.store.initialise(images, masks, names=names, reduce_sum=self.comm.all_reduce_sum, smooth_prior=smooth)
        self.num_valid_total = int(self._sum(float(self.store.num_valid))[0])
        self.num_unselected_total = self.num_valid_total
        self._refresh_statistics()

    def _sum(self, *values: float) -> Tensor:
        return self.comm.all_reduce_sum(torch.tensor(values, dtype=torch.float64))

    # -- schedules (the one place where steps become EVOS iterations) ------------------------------
    def iteration(self, step: int) -> int:
        """nerfstudio counts steps from 0; EVOS's iterations t count from 1."""
        return step + 1

    def is_key(self, step: int) -> bool:
        """On the key schedule, or the user changed the ratio (same answer on every rank)."""
        c = self.config
        if c.strategy in POOL_STRATEGIES and self.pool_ratio is not None and self.pool_ratio != self.controls.ratio:
            return True
        # Rays: an interval of 1 re-ranks every step (the official image code would never re-rank).
        return schedules.is_key_iteration(
            self.iteration(step), self.total_steps, c.key_schedule, c.init_interval, c.end_interval, one_means_every_step=True
        )

    def key_interval(self, step: int) -> int:
        c = self.config
        return schedules.key_interval(self.iteration(step), self.total_steps, c.key_schedule, c.init_interval, c.end_interval)

    @property
    def ratio_schedule(self) -> schedules.SampleRatioSchedule:
        """The schedule ``auto`` stands for: EVOS anneals, the other strategies keep their share."""
        schedule = self.config.ratio_schedule
        if schedule == "auto":
            return "step" if self.config.strategy == "evos" else "constant"
        return schedule

    def rates(self, step: int) -> Tuple[float, float]:
        """(r_t, m): population share and mutant share of all pixels at this step."""
        c, t = self.config, self.iteration(step)
        r0 = self.controls.ratio
        r_t = schedules.sample_ratio(t, self.total_steps, r0, self.ratio_schedule)
        alpha = self.controls.mutation
        end = alpha if c.end_mutation is None else c.end_mutation
        m = schedules.mutation_ratio(t, self.total_steps, r0, r_t, c.mutation_schedule, alpha, end, c.mutation_base)
        return r_t, m

    def counts(self, step: int, num_pixels: int) -> Tuple[int, int]:
        """(survivors, mutants) of the population over ``num_pixels`` pixels at this step."""
        r_t, m = self.rates(step)
        return schedules.split_counts(num_pixels, r_t, m)

    # -- the loop --------------------------------------------------------------------------------
    def maybe_evolve(self, step: int, measure: Optional[MeasureFn] = None) -> bool:
        """Begin a step: agree on the controls, then at key iterations re-measure and re-rank.

        Call once per step on every rank, before :meth:`select` (its collectives must line up).
        Returns whether this was a key iteration.
        """
        self.step = step
        if self.comm.is_distributed():
            self.controls.load_tensor(self.comm.broadcast(self.controls.to_tensor()))
        schedules.check_ratio("EVOS ratio", self.controls.ratio)
        schedules.check_ratio("EVOS mutation", self.controls.mutation, allow_zero=True)
        if self.softmining is not None and self._softmining_due(step):
            with self._timed("selection_seconds"):
                self.softmining.rebuild(self.store.corrected_fitness(
                    False, self.comm.all_reduce_sum, self.config.unvisited_prior, self.config.neighbourhood_prior
                ))
            self._softmining_built_at = step
        if not self.is_key(step):
            if self.statistics:
                self.statistics["steps_since_key"] = float(step - self.last_key_step)
            return False
        # A key iteration starts a new epoch: the closing one's error level is agreed over all ranks.
        closing = self._sum(self.store.epoch_sum, float(self.store.epoch_count))
        self.store.close_epoch(float(closing[0]), float(closing[1]))
        if self.live is not None:
            self.live.take(self.comm.all_reduce_sum)
        if self.config.strategy in POOL_STRATEGIES:
            self._evolve(step, measure)
        self.last_key_step = step
        self._refresh_statistics()
        return True

    def _softmining_due(self, step: int) -> bool:
        built = self._softmining_built_at
        return built is None or step - built >= self.config.softmining_refresh or step < built

    def _evolve(self, step: int, measure: Optional[MeasureFn]) -> None:
        """Re-measure the stalest pool members, then rank every pixel into a new pool."""
        c, store = self.config, self.store
        measured = self._sum(float(store.num_measured))
        if c.strategy in ("evos", "topk") and float(measured[0]) == 0:
            return  # nothing measured yet: keep sampling uniformly until the next key iteration
        budget = self.batch_size if c.refresh_budget is None else c.refresh_budget
        if measure is not None and budget > 0 and c.strategy in ("evos", "topk"):
            with self._timed("refresh_seconds"):
                stale = self.pool.stalest(budget, self.generator) if self.pool is not None else None
                if stale is not None and stale.numel():
                    errors = measure(store.unflatten(stale).cpu())
                    store.update(stale, errors, trained=False)
                if c.fitness == "learnable":
                    # Probes: uniform over all valid pixels, the unbiased sample the floors are fitted on.
                    probes = store.sample_uniform(budget, self.generator)
                    errors = measure(store.unflatten(probes).cpu())
                    store.update(probes, errors, trained=False, uniform=torch.ones_like(probes, dtype=torch.bool))
        with self._timed("selection_seconds"):
            pool_size, _ = self.counts(step, store.num_valid)
            evidence = self.crossview.take(self.comm.all_reduce_sum) if self.crossview is not None else None
            members, self.balance = rank_pixel_mask(
                store, pool_size, c.strategy, self.generator, c.crossover, c.stale_correction,
                c.unvisited_prior, c.neighbourhood_prior, self.comm.all_reduce_sum, c.fitness, c.crossover_prior, c.shrinkage,
                evidence, round(c.pool_trim * store.num_valid) if self.trims(step) else 0,
            )
            self._set_pool(CandidatePool(store, members))
            self.pool_ratio = self.controls.ratio

    def trims(self, step: int) -> bool:
        """Whether a ranking at ``step`` trims the top of the pool (``pool_trim`` after ``pool_trim_start``)."""
        return self.config.pool_trim > 0 and step >= self.config.pool_trim_start * self.total_steps

    def _set_pool(self, pool: Optional[CandidatePool]) -> None:
        self.pool = pool
        here = self.pool.num_unselected if self.pool is not None else self.store.num_valid
        self.num_unselected_total = int(self._sum(float(here))[0])
        self.mutation_scale = mutation_scale(here, self.num_unselected_total, self.comm.get_world_size())

    def select(self, batch_size: Optional[int] = None) -> Selection:
        """This step's rays. O(batch) for every strategy but softmining's periodic rebuild."""
        with self._timed("selection_seconds"):
            selection = self._select(self.batch_size if batch_size is None else int(batch_size))
        self.last_selection = selection
        return selection

    def _select(self, batch_size: int) -> Selection:
        store, gen, strategy = self.store, self.generator, self.config.strategy
        if strategy == "uniform" or self.controls.paused or self.step < self.config.uniform_start:
            return _all_uniform(store.sample_uniform(batch_size, gen))
        if self.errormap is not None:
            return Selection(self.errormap.draw(batch_size, gen), None, 0)
        if self.softmining is not None:
            flat, weights = self.softmining.draw(batch_size, self.step, gen)
            return Selection(flat, weights, 0)
        if self.pool is None or self.pool.size == 0:
            return _all_uniform(store.sample_uniform(batch_size, gen))
        share = self.mutant_share(self.step)
        num_mutants = mutant_count(batch_size, share, self.mutation_scale, gen)
        flat, num_mutants = self.pool.draw(batch_size, num_mutants, gen, self._pool_importance(), self.config.pool_candidates)
        return Selection(flat, self._pool_weights(flat, share), num_mutants)

    def draw_power(self, step: int) -> float:
        """Exponent on the root error of the pool draw: 0 uniform, 1 proportional (``pool_draw``)."""
        draw = self.config.pool_draw
        if draw == "annealed":
            r0, (r_t, _) = self.controls.ratio, self.rates(step)
            return max(0.0, (1.0 - r_t) / (1.0 - r0)) if r0 < 1.0 else 0.0
        return 1.0 if draw == "fitness" else 0.0

    def _pool_importance(self) -> Optional[Importance]:
        power = self.draw_power(self.step)
        return live_importance(self.store, self.config.stale_correction, power) if power > 0 else None

    def mutant_share(self, step: int) -> float:
        """Share of a batch drawn as mutants: |M_t| / |Z_t| of the population at this step.

        Hard mining (topk) trains on EVOS's survivors alone: the same pool, no mutants."""
        if self.config.strategy == "topk":
            return 0.0
        if self.config.mutation_control == "live" and self.live is not None and self.pool is not None:
            pool_fraction = 1.0 - self.num_unselected_total / max(self.num_valid_total, 1)
            share = loss_share_mutants(pool_fraction, self.live.hardness)
            if math.isfinite(share):
                return share
        selected, mutants = self.counts(step, max(self.num_valid_total, 1))
        total = selected + mutants
        return mutants / total if total > 0 else 1.0

    def weight_exponent(self, step: int) -> float:
        """The importance-weight exponent at this step (after its warm-up ramp)."""
        c = self.config
        ramp = c.importance_warmup * self.total_steps
        return c.importance_weights * (min(1.0, self.iteration(step) / ramp) if ramp > 0 else 1.0)

    def _pool_weights(self, flat: Tensor, share: float) -> Optional[Tensor]:
        """(M q)^-a for pool members and mutants, q each ray's probability among M pixels (global)."""
        a = self.weight_exponent(self.step)
        if a == 0 or self.pool is None:
            return None
        world = self.comm.get_world_size()
        q_pool = max(1.0 - share * self.mutation_scale, 0.0) / max(self.pool.size * world, 1)
        q_rest = share / max(self.num_unselected_total, 1)
        q = torch.where(self.pool.contains(flat), q_pool, q_rest).double()
        return (self.num_valid_total * q).clamp_min(1e-12).pow(-a).float()

    @property
    def wants_points(self) -> bool:
        """Whether ``observe`` uses the trained rays' surface points (the crossview prior)."""
        return self.crossview is not None

    def observe(
        self, flat: Tensor, errors: Tensor, step: int, trained: bool = True, uniform: Optional[Tensor] = None,
        points: Optional[Tensor] = None,
    ) -> Tensor:
        """Write back per-ray errors (NaN/inf skipped). Returns how many were skipped (a 0-dim tensor
        on the store's device: reading it waits for the GPU, so the training loop does not).

        ``uniform``: the selection's uniform-draw flags (``Selection.uniform``), which the
        learnable-error fitness needs; None counts no ray as uniformly drawn. ``points``: [R, 3] world
        point where each ray ends (its depth), which the crossview prior projects into the other views."""
        with self._timed("selection_seconds"):
            skipped = self.store.update(flat, errors, trained=trained, uniform=uniform)
            if self.errormap is not None and trained:
                self.errormap.observe(flat, errors)
            if self.crossview is not None and points is not None and trained:
                self.crossview.add(points, errors, self.store.camera_of(flat))
            if self.live is not None and self.pool is not None and trained:
                self.live.add(self.pool.contains(flat), errors)
        return skipped

    @property
    def skipped_errors(self) -> int:
        """Non-finite per-ray errors left out of the store (all steps; a host read on a GPU store)."""
        return self.store.num_skipped

    # -- read-outs -------------------------------------------------------------------------------
    def _refresh_statistics(self) -> None:
        """Read-outs over all ranks (a collective: runs at key iterations, on every rank)."""
        summary = summarise(self.store, self.comm.all_reduce_sum)
        step = max(self.last_key_step, 0)
        self.statistics = {
            "key_interval": float(self.key_interval(step)),
            "steps_since_key": 0.0,
            "last_key_step": float(self.last_key_step),
            "pool_hardness": math.nan if self.live is None else self.live.hardness,
            **summary.scalars(),
        }
        self.histogram = (summary.counts, summary.bin_edges)

    # -- checkpoints -----------------------------------------------------------------------------
    def sharded_state(self) -> Dict[str, Tensor]:
        """This rank's part of the selection state, as flat checkpoint entries. A collective.

        Per-pixel state has one key per camera (``fitness/cam00042``, ``epoch/...``, ``visits/...``,
        ``uniform/...`` and ``pool/...``: packed membership bits), so any world size can load it; the RNG, the
        error map, the crossview prior's open readings and the live-hardness sums are per rank (``generator/rank1``); the rest is the same on every rank. Per-pixel
        entries are views of the store: nothing is copied or gathered.
        """
        store, rank = self.store, self.comm.get_rank()
        state: Dict[str, Tensor] = {}
        for local, camera in enumerate(store.cameras.tolist()):
            start, end = store.image_range(local)
            state[camera_key("fitness", camera)] = store.fitness[start:end]
            state[camera_key("epoch", camera)] = store.epoch[start:end]
            if store.visits is not None:
                state[camera_key("visits", camera)] = store.visits[start:end]
            if store.uniform is not None:
                state[camera_key("uniform", camera)] = store.uniform[local]
            if self.pool is not None:
                state[camera_key("pool", camera)] = self.pool.image_bits(local)
        state[rank_key("generator", rank)] = self.generator.get_state()
        if self.errormap is not None:
            for name, value in self.errormap.state_tensors().items():
                state[rank_key("errormap", rank) + "/" + name] = value
        if self.crossview is not None:  # this rank's readings since the last key iteration
            state[rank_key("crossview", rank)] = self.crossview.state_tensor()
        if self.live is not None:  # this rank's open sums, and the agreed hardness
            state[rank_key("hardness", rank)] = self.live.state_tensor()
            # The agreed value is the same on every rank: kept once more outside the rank keys, so a
            # resume on another world size keeps it too (the open sums are per rank and do not come back).
            state["selector/pool_hardness"] = torch.tensor([self.live.hardness], dtype=torch.float64)
        pending = self._sum(store.epoch_sum, float(store.epoch_count))  # the open epoch, over all ranks
        state.update({
            "selector/strategy": _text(self.config.strategy),
            "selector/controls": self.controls.to_tensor(),
            "selector/schedule": torch.tensor([
                math.nan if self.pool_ratio is None else self.pool_ratio, float(self.last_key_step), self.balance,
                float(self.pool is not None),
            ], dtype=torch.float64),
            "store/epochs": torch.tensor([store.current_epoch], dtype=torch.int64),
            "store/error_levels": torch.tensor(store.error_levels, dtype=torch.float64),
            "store/open_epoch_errors": pending,
        })
        return state

    def wants_key(self, key: str, same_world_size: bool) -> bool:
        """Whether this rank loads a checkpoint entry: its cameras', its rank's (same world size only), all shared ones."""
        camera = key_camera(key)
        if camera is not None:
            return self.store.owns(camera)
        rank = key_rank(key)
        if rank is not None:
            return same_world_size and rank == self.comm.get_rank()
        return True

    def load_sharded_state(self, state: Dict[str, Tensor], same_world_size: bool) -> None:
        """Restore from the entries ``wants_key`` chose (a collective). Per-pixel state is exact on any
        world size; the RNG, the error map, the crossview readings and the live-hardness sums of the open key interval only
        come back when the world size is the same (the agreed pool hardness comes back on any)."""
        saved = _untext(state["selector/strategy"])
        if saved != self.config.strategy:
            raise UserInputError(
                f"checkpoint was trained with --pipeline.datamanager.pixel-sampler.strategy {saved}, "
                f"this run uses {self.config.strategy}: resume with the same strategy"
            )
        store, rank = self.store, self.comm.get_rank()
        schedule = state["selector/schedule"].tolist()
        has_pool = schedule[3] > 0.5
        bits: List[Tensor] = []
        for local, camera in enumerate(store.cameras.tolist()):
            start, end = store.image_range(local)
            _copy_into(store.fitness[start:end], state[camera_key("fitness", camera)])
            _copy_into(store.epoch[start:end], state[camera_key("epoch", camera)])
            if store.visits is not None:
                visits = state.get(camera_key("visits", camera))
                store.visits[start:end] = 0 if visits is None else visits.to(store.visits.device)
            if store.uniform is not None:
                store.load_uniform(local, state.get(camera_key("uniform", camera)))
            if has_pool:
                bits.append(state[camera_key("pool", camera)])
        store.current_epoch = int(state["store/epochs"][0])
        store.error_levels = state["store/error_levels"].tolist()
        pending = state["store/open_epoch_errors"].tolist()  # all ranks' sum: keep it once, on rank 0
        store.epoch_sum, store.epoch_count = (float(pending[0]), int(pending[1])) if rank == 0 else (0.0, 0)
        store.refresh_counts()
        generator = state.get(rank_key("generator", rank)) if same_world_size else None
        if generator is not None:
            self.generator.set_state(generator)
        saved_controls = SelectorControls(0.0, 0.0)
        saved_controls.load_tensor(state["selector/controls"])
        if saved_controls != self.controls:
            # The command line wins, as for every other flag on resume; say so rather than silently.
            console.print(
                f"EVOS: the checkpoint's controls (ratio {saved_controls.ratio:g}, mutation {saved_controls.mutation:g}, "
                f"paused {saved_controls.paused}) differ from this run's (ratio {self.controls.ratio:g}, mutation "
                f"{self.controls.mutation:g}, paused {self.controls.paused}); resuming with this run's"
            )
        self.pool_ratio = None if math.isnan(schedule[0]) else schedule[0]
        self.last_key_step, self.balance = int(schedule[1]), schedule[2]
        if self.errormap is not None and same_world_size:
            prefix = rank_key("errormap", rank) + "/"
            tensors = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if tensors:
                self.errormap.load_state_tensors(tensors)
        if self.crossview is not None and same_world_size:
            readings = state.get(rank_key("crossview", rank))
            if readings is not None:
                self.crossview.load_state_tensor(readings)
        if self.live is not None:
            hardness = state.get(rank_key("hardness", rank)) if same_world_size else None
            agreed = state.get("selector/pool_hardness")
            if hardness is not None:
                self.live.load_state_tensor(hardness)
            elif agreed is not None:  # another world size: the agreed value, with this interval's sums from zero
                self.live.hardness = float(agreed.reshape(-1)[0])
            # Older checkpoints have neither: the fixed split until the next key iteration.
        self.num_valid_total = int(self._sum(float(store.num_valid))[0])
        self._set_pool(CandidatePool.from_image_bits(store, bits) if has_pool else None)
        self._refresh_statistics()

    def memory_bytes(self) -> int:
        """The store plus the pool (membership bits, and the members of a sparse pool)."""
        return self.store.memory_bytes() + (0 if self.pool is None else self.pool.memory_bytes())

    def _apply(self, fn, recurse=True):
        # Keep the pool (not a buffer) on the buffers' device.
        out = super()._apply(fn, recurse)
        if getattr(self, "pool", None) is not None:
            self.pool = CandidatePool(self.store, self.pool.members())
        if getattr(self, "crossview", None) is not None:
            self.crossview.to_(self.store.fitness.device)
        return out


def _all_uniform(flat: Tensor) -> Selection:
    return Selection(flat, None, flat.numel(), torch.ones(flat.numel(), dtype=torch.bool, device=flat.device))


def _copy_into(target: Tensor, value: Tensor) -> None:
    """Copy a loaded entry into the store, unless it was loaded in place (a view of the same memory)."""
    if value.shape != target.shape:
        raise ValueError(f"checkpoint entry of shape {tuple(value.shape)} for {tuple(target.shape)} pixels")
    if value.data_ptr() != target.data_ptr() or value.device != target.device:
        target.copy_(value)
