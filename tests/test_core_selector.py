"""The whole per-ray EVOS loop on hand-built errors: no nerfstudio, a fake ``measure``."""

import math
import time

import pytest
import torch

from evos_nerf.core import schedules
from evos_nerf.core.neighbourhood import BlockPrior
from evos_nerf.core.selector import RaySelector, SelectorConfig
from evos_nerf.core.store import FitnessStore
from evos_nerf.errors import UserInputError

H, W, N = 8, 8, 4
P = N * H * W


def make(strategy="evos", batch=32, total=200, interval=10, **kw) -> RaySelector:
    """A selector on N small images with key iterations every ``interval`` steps."""
    store = FitnessStore([(H, W)] * N, dtype=torch.float32, track_visits=True)
    gen = torch.Generator().manual_seed(0)
    config = SelectorConfig(strategy=strategy, init_interval=interval, end_interval=interval, **kw)
    selector = RaySelector(config, store, batch, gen, total)
    images = torch.rand(N, H, W, 3, generator=torch.Generator().manual_seed(1))
    selector.initialise(list(images))
    return selector


class Scene:
    """A fake model: pixel i has error base_i, which halves every time the pixel is trained (or, with
    ``learns=False``, stays)."""

    def __init__(self, base: torch.Tensor, learns: bool = True):
        self.base = base.clone()
        self.calls = []
        self.learns = learns

    def train(self, flat):
        errors = self.base[flat].clone()
        if self.learns:
            self.base[flat] *= 0.5
        return errors

    def measure(self, cyx):
        self.calls.append(cyx.shape[0])
        flat = cyx[:, 0] * H * W + cyx[:, 1] * W + cyx[:, 2]
        return self.base[flat]


def run(selector: RaySelector, scene: Scene, steps: int) -> list:
    """Train ``steps`` steps; returns each step's selected flat indices."""
    flats = []
    for step in range(steps):
        selector.maybe_evolve(step, scene.measure)
        sel = selector.select()
        selector.observe(sel.flat, scene.train(sel.flat), step)
        flats.append(sel.flat)
    return flats


def test_first_steps_are_uniform_then_the_pool_has_the_official_size():
    selector = make()
    assert selector.maybe_evolve(0) is True  # t = 1 is a key iteration; nothing measured yet
    assert selector.pool is None and selector.select().num_mutants == 32
    scene = Scene(torch.rand(P, generator=torch.Generator().manual_seed(2)))
    run(selector, scene, 12)  # key iterations at steps 0 and 10 (t mod 10 == 1)
    assert selector.last_key_step == 10
    r, m = 0.5, 0.25
    assert selector.pool.size == P - math.floor((1 - r + m) * P)  # k' of the official code


def test_key_iterations_follow_evos_rule_on_one_based_iterations():
    selector = make(total=100)
    keys = [s for s in range(100) if selector.is_key(s)]
    assert keys == [t - 1 for t in schedules.key_iterations(100, "lin_dec", 10, 10)]
    assert keys[0] == 0


def test_mutants_come_from_outside_the_pool_at_the_population_share():
    selector = make(batch=64)
    scene = Scene(torch.rand(P, generator=torch.Generator().manual_seed(3)))
    run(selector, scene, 11)
    sel = selector.select()
    in_pool = selector.pool.contains(sel.flat)
    assert sel.num_mutants == int((~in_pool).sum()) == 32  # m / r_t = 0.25 / 0.5 of the batch
    assert sel.flat.unique().numel() == 64


def test_evos_trains_high_error_pixels_more_than_uniform_does():
    base = torch.full((P,), 0.01)
    base[: P // 8] = 1.0  # one hard eighth
    visits = {}
    for strategy in ("uniform", "evos"):
        selector = make(strategy)
        run(selector, Scene(base), 60)
        visits[strategy] = float(selector.store.visits[: P // 8].float().sum() / selector.store.visits.float().sum())
    assert visits["uniform"] < 0.15 and visits["evos"] > 1.4 * visits["uniform"]


def test_key_iterations_remeasure_the_stalest_pool_members_within_budget():
    selector = make(refresh_budget=5)
    scene = Scene(torch.rand(P, generator=torch.Generator().manual_seed(4)))
    run(selector, scene, 25)
    assert scene.calls == [5]  # step 10 ranked without a pool; step 20 re-measured 5


def test_a_changed_ratio_control_re_ranks_at_the_next_step():
    selector = make()
    run(selector, Scene(torch.rand(P)), 12)
    before = selector.pool.size
    selector.controls.ratio = 0.9
    assert selector.maybe_evolve(12) is True
    assert selector.pool.size != before


def test_paused_selection_is_uniform_but_still_records_fitness():
    selector = make()
    run(selector, Scene(torch.rand(P)), 12)
    selector.controls.paused = True
    selector.maybe_evolve(12)
    sel = selector.select()
    assert sel.num_mutants == 32 and sel.weights is None


def test_topk_trains_only_on_the_survivors():
    selector = make("topk")
    base = torch.arange(P, dtype=torch.float32)
    run(selector, Scene(base), 11)
    sel = selector.select()
    assert sel.num_mutants == 0 and bool(selector.pool.contains(sel.flat).all())


def test_the_auto_schedule_anneals_evos_and_keeps_every_other_pool_strategy_at_its_share():
    late = 190  # the step scheduler's last stage: r_t = 0.5 + 9 * 0.05
    assert make("evos", ratio_schedule="auto").rates(late)[0] == pytest.approx(0.95)
    for strategy in ("topk", "staleness", "edges"):
        assert make(strategy, ratio_schedule="auto").rates(late)[0] == 0.5, strategy
    assert make("topk", ratio_schedule="step").rates(late)[0] == pytest.approx(0.95)  # annealed only when asked


def test_importance_weights_make_the_loss_an_unbiased_estimate_of_the_mean():
    selector = make(batch=64, importance_weights=1.0)
    run(selector, Scene(torch.rand(P, generator=torch.Generator().manual_seed(5))), 11)
    errors = torch.rand(P, generator=torch.Generator().manual_seed(6))
    total, count = 0.0, 0
    for _ in range(400):
        sel = selector.select()
        total += float((sel.weights * errors[sel.flat]).sum())
        count += sel.flat.numel()
    assert abs(total / count - float(errors.mean())) < 0.03
    # Exactly: pool members have q = (1 - s) / |pool|, the rest q = s / unselected.
    sel = selector.select()
    in_pool = selector.pool.contains(sel.flat)
    s = 0.5
    expected = torch.where(in_pool, selector.pool.size / (P * (1 - s)), (P - selector.pool.size) / (P * s))
    assert torch.allclose(sel.weights.double(), expected.double(), rtol=1e-5)


def _copy(state):
    return {k: v.clone() for k, v in state.items()}


def test_sharded_state_round_trip_is_exact_and_selects_identically():
    a = make()
    run(a, Scene(torch.rand(P, generator=torch.Generator().manual_seed(7))), 15)
    state = _copy(a.sharded_state())
    assert set(state) >= {"fitness/cam00000", "epoch/cam00003", "pool/cam00002", "visits/cam00001", "generator/rank0"}
    assert state["pool/cam00000"].dtype == torch.uint8 and state["pool/cam00000"].numel() == H * W // 8
    b = make()
    b.load_sharded_state(state, same_world_size=True)
    assert torch.equal(a.store.fitness, b.store.fitness) and torch.equal(a.store.epoch, b.store.epoch)
    assert torch.equal(a.pool.bits, b.pool.bits)  # membership bits: restored exactly
    levels = [torch.tensor(x.store.error_levels).nan_to_num(-1.0) for x in (a, b)]
    assert torch.equal(*levels) and a.store.current_epoch == b.store.current_epoch
    for step in (15, 16, 20, 21):  # past the next key iteration (step 20)
        a.maybe_evolve(step)
        b.maybe_evolve(step)
        sa, sb = a.select(), b.select()
        assert torch.equal(sa.flat, sb.flat)
        errors = torch.rand(32)
        a.observe(sa.flat, errors, step)
        b.observe(sb.flat, errors, step)


class FakeRank:
    """The collectives of one rank of a world whose reductions are left out (resharding tests)."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world = rank, world

    def is_distributed(self):
        return False

    def get_rank(self):
        return self.rank

    def get_world_size(self):
        return self.world

    def all_reduce_sum(self, t):
        return t

    def broadcast(self, t, src=0):
        return t


def _shard(cameras, rank, world, images):
    store = FitnessStore([(H, W)] * len(cameras), dtype=torch.float32, cameras=cameras, num_cameras=N)
    selector = RaySelector(SelectorConfig(init_interval=10, end_interval=10), store, 16,
                           torch.Generator().manual_seed(rank), 200, collectives=FakeRank(rank, world))
    selector.initialise([images[c] for c in cameras])
    return selector


def test_per_camera_state_loads_on_any_world_size_bit_for_bit():
    images = list(torch.rand(N, H, W, 3, generator=torch.Generator().manual_seed(1)))
    whole = make()
    run(whole, Scene(torch.rand(P, generator=torch.Generator().manual_seed(8))), 15)
    saved = _copy(whole.sharded_state())
    members = set(whole.pool.members().tolist())
    for shards in ([[0, 2], [1, 3]], [[0], [1, 2], [3]]):
        merged = {}
        for rank, cameras in enumerate(shards):
            part = _shard(cameras, rank, len(shards), images)
            part.load_sharded_state({k: v for k, v in saved.items() if part.wants_key(k, False)}, same_world_size=False)
            for local, camera in enumerate(cameras):
                start, end = part.store.image_range(local)
                assert torch.equal(part.store.fitness[start:end], whole.store.fitness[camera * H * W:(camera + 1) * H * W])
                assert torch.equal(part.store.epoch[start:end], whole.store.epoch[camera * H * W:(camera + 1) * H * W])
                in_pool = set((part.pool.members()[(part.pool.members() >= start) & (part.pool.members() < end)] - start
                               + camera * H * W).tolist())
                assert in_pool == {m for m in members if camera * H * W <= m < (camera + 1) * H * W}
            merged.update(_copy(part.sharded_state()))
        back = make()
        back.load_sharded_state(merged, same_world_size=False)  # and back onto one rank
        assert torch.equal(back.store.fitness, whole.store.fitness) and torch.equal(back.pool.bits, whole.pool.bits)
    assert not _shard([0, 1], 0, 2, images).wants_key("generator/rank0", same_world_size=False)
    assert not _shard([0, 1], 1, 2, images).wants_key("fitness/cam00002", same_world_size=True)


def test_a_checkpoint_of_another_strategy_is_refused():
    state = make().sharded_state()
    with pytest.raises(UserInputError, match="strategy evos, this run uses topk"):
        make("topk").load_sharded_state(state, same_world_size=True)


def test_key_iterations_open_a_new_epoch_with_the_closed_one_s_error_level():
    selector = make()
    scene = Scene(torch.full((P,), 0.5))
    run(selector, scene, 12)  # key iterations at steps 0 and 10
    store = selector.store
    assert store.current_epoch == 3
    assert math.isnan(store.error_levels[1])  # nothing trained before step 0
    assert 0.0 < store.error_levels[2] < 0.5  # steps 0-9: errors halve as pixels are trained
    assert set(store.epoch.unique().tolist()) <= {0, 2, 3}


def test_out_of_range_settings_name_the_flag():
    with pytest.raises(UserInputError, match="strategy must be one of evos, uniform, .*got 'uniform errormap'"):
        SelectorConfig(strategy="uniform errormap").validate()
    with pytest.raises(UserInputError, match="ratio must be in"):
        SelectorConfig(ratio=0).validate()
    with pytest.raises(UserInputError, match="importance-weights"):
        SelectorConfig(importance_weights=float("nan")).validate()
    with pytest.raises(UserInputError, match="softmining-refresh"):
        SelectorConfig(softmining_refresh=0).validate()
    with pytest.raises(UserInputError, match="shrinkage"):
        SelectorConfig(shrinkage=-1.0).validate()
    with pytest.raises(UserInputError, match="prior-bonus must be a finite number >= 0, got inf"):
        SelectorConfig(prior_bonus=float("inf")).validate()


def test_importance_weight_exponent_ramps_over_its_warm_up_share_of_the_run():
    selector = make(total=100, importance_weights=1.0, importance_warmup=0.5)
    assert selector.weight_exponent(0) == pytest.approx(1 / 50)
    assert selector.weight_exponent(24) == pytest.approx(0.5)
    assert selector.weight_exponent(49) == selector.weight_exponent(99) == 1.0


def test_fitness_draw_trains_the_pool_s_highest_live_errors_more_often():
    base = torch.rand(P, generator=torch.Generator().manual_seed(4))
    trained, exact = {}, {}
    for draw in ("uniform", "fitness"):
        selector = make(batch=64, pool_draw=draw)
        scene = Scene(base)
        run(selector, scene, 11)  # the pool from step 10's ranking
        root = selector.store.fitness[selector.pool.members()].sqrt()  # all measured by now
        drawn = torch.cat([selector.select().flat[:32] for _ in range(400)])
        assert bool(selector.pool.contains(drawn).all())
        trained[draw] = float(selector.store.fitness[drawn].sqrt().mean()) / float(root.mean())
        exact[draw] = 1.0 if draw == "uniform" else float((root**2).mean() / root.mean() ** 2)
    # 32 x 8 candidates cover the pool, so the draw is exactly proportional: E[w^2] / E[w]^2 over it
    assert exact["fitness"] > 1.05
    assert trained == pytest.approx(exact, abs=0.02)


def test_fitness_draw_refuses_importance_weights_it_would_make_wrong():
    with pytest.raises(UserInputError, match="pool-draw fitness does not combine with importance-weights"):
        SelectorConfig(pool_draw="fitness", importance_weights=1.0).validate()
    with pytest.raises(UserInputError, match="pool-draw must be uniform, fitness or annealed, got 'sharp'"):
        SelectorConfig(pool_draw="sharp").validate()
    with pytest.raises(UserInputError, match="pool-draw annealed needs fitness error, got learnable"):
        SelectorConfig(pool_draw="annealed", fitness="learnable").validate()
    with pytest.raises(UserInputError, match="pool-candidates"):
        SelectorConfig(pool_candidates=0).validate()


def test_annealed_draw_goes_from_proportional_at_r0_to_uniform_when_the_pool_is_every_pixel():
    selector = make(total=100, pool_draw="annealed", ratio_schedule="linear")
    assert selector.draw_power(0) == pytest.approx(1 - 1 / 100)  # t = 1: r_t just above r0
    assert selector.draw_power(49) == pytest.approx(0.5)  # t = 50: r_t halfway from 0.5 to 1
    assert selector.draw_power(99) == 0.0  # t = T: r_t = 1, a uniform draw
    assert make(total=100, pool_draw="annealed").draw_power(99) == 1.0  # a constant ratio never anneals
    assert make(total=100, pool_draw="fitness", ratio_schedule="linear").draw_power(99) == 1.0


class QueuedDevice:
    """A fake CUDA device: ``synchronize`` waits for whatever work is queued, then nothing is."""

    def __init__(self):
        self.queued = 0.0
        self.calls = 0

    def synchronize(self, device=None):
        self.calls += 1
        time.sleep(self.queued)
        self.queued = 0.0


@pytest.mark.parametrize("exact", [False, True])
def test_exact_timers_leave_the_wait_for_queued_gpu_work_out_of_the_sampler_time(monkeypatch, exact):
    """A CUDA store's first host read waits for the previous step's kernels; exact timers wait
    before starting the clock, so the sampler's time is its own (here: far below the queued work)."""
    device = QueuedDevice()
    monkeypatch.setattr(torch.cuda, "synchronize", device.synchronize)
    monkeypatch.setattr(RaySelector, "_store_on_cuda", lambda self: True)
    selector = make()
    selector.exact_timers = exact
    scene = Scene(torch.rand(P, generator=torch.Generator().manual_seed(4)))
    for step in range(12):
        selector.maybe_evolve(step, scene.measure)
        device.queued = 0.05  # the backward and optimizer kernels of the step before
        sel = selector.select()
        selector.observe(sel.flat, scene.train(sel.flat), step)
    if exact:
        assert device.calls >= 2 * 2 * 12  # before and after select and observe, every step
        assert selector.selection_seconds < 0.05 * 12 / 2  # the 0.6 s queued is not the sampler's
    else:
        assert device.calls == 0  # no waiting added to training unless asked for


def test_exact_timers_do_nothing_on_a_cpu_store(monkeypatch):
    device = QueuedDevice()
    monkeypatch.setattr(torch.cuda, "synchronize", device.synchronize)
    selector = make()
    selector.exact_timers = True
    run(selector, Scene(torch.rand(P, generator=torch.Generator().manual_seed(5))), 12)
    assert device.calls == 0 and selector.selection_seconds > 0


@pytest.mark.parametrize("strategy", ["evos", "softmining"])
def test_prior_levels_reach_the_ranking_as_a_hierarchy_of_blocks(strategy):
    selector = make(strategy, prior_block=2, prior_levels=3)
    seen = []
    ranking_scores = selector.store.ranking_scores

    def spy(*args, **kwargs):
        seen.append(args[3])  # prior_block, positional in every caller
        return ranking_scores(*args, **kwargs)

    selector.store.ranking_scores = spy
    run(selector, Scene(torch.rand(P, generator=torch.Generator().manual_seed(2))), 12)
    assert seen and set(seen) == {BlockPrior((2, 4, 8), 1.0)}


def _scene():
    return Scene(torch.rand(P, generator=torch.Generator().manual_seed(3)))


def test_samplers_that_rank_draw_uniforms_own_batches_until_their_first_ranking_and_soft_mining_does_not():
    """What a lock-step group shares with uniform: on fox the first hundred batches decide a
    run's outcome to about a dB, and every sampler but Soft Mining draws them as uniform does."""
    uniform = run(make("uniform"), _scene(), 12)
    for strategy in ("evos", "topk", "errormap"):
        drawn = run(make(strategy, interval=10, errormap_window=10), _scene(), 12)  # first ranking at step 10
        assert [torch.equal(a, b) for a, b in zip(uniform, drawn)] == [True] * 10 + [False] * 2, strategy
    drawn = run(make("softmining"), _scene(), 12)
    assert not any(torch.equal(a, b) for a, b in zip(uniform, drawn))


@pytest.mark.parametrize("strategy", ["softmining", "errormap"])
def test_uniform_start_draws_the_uniform_samplers_batches_then_hands_over(strategy):
    uniform = run(make("uniform"), _scene(), 6)
    started = run(make(strategy, errormap_window=2, softmining_refresh=1, uniform_start=3), _scene(), 6)
    assert all(torch.equal(a, b) for a, b in zip(uniform[:3], started[:3]))
    assert not torch.equal(uniform[3], started[3])
    with pytest.raises(UserInputError, match="uniform-start must be a finite number >= 0"):
        SelectorConfig(uniform_start=-1).validate()
