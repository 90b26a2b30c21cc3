"""The whole per-ray EVOS loop on hand-built errors: no nerfstudio, a fake ``measure``."""

import math

import pytest
import torch

from evos_nerf.core import schedules
from evos_nerf.core.selector import RaySelector, SelectorConfig
from evos_nerf.core.store import FitnessStore
from evos_nerf.errors import UserInputError

H, W, N = 8, 8, 4
P = N * H * W


def make(strategy="evos", batch=32, total=200, **kw) -> RaySelector:
    store = FitnessStore([(H, W)] * N, dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    selector = RaySelector(SelectorConfig(strategy=strategy, init_interval=10, end_interval=10, **kw), store, batch, gen, total)
    images = torch.rand(N, H, W, 3, generator=torch.Generator().manual_seed(1))
    selector.initialise(list(images))
    return selector


class Scene:
    """A fake model: pixel i has error base_i, which halves every time the pixel is trained."""

    def __init__(self, base: torch.Tensor):
        self.base = base.clone()
        self.calls = []

    def train(self, flat):
        errors = self.base[flat].clone()
        self.base[flat] *= 0.5
        return errors

    def measure(self, cyx):
        self.calls.append(cyx.shape[0])
        flat = cyx[:, 0] * H * W + cyx[:, 1] * W + cyx[:, 2]
        return self.base[flat]


def run(selector: RaySelector, scene: Scene, steps: int):
    for step in range(steps):
        selector.maybe_evolve(step, scene.measure)
        sel = selector.select()
        selector.observe(sel.flat, scene.train(sel.flat), step)


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
    assert visits["uniform"] < 0.2 < visits["evos"]


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


def test_state_round_trip_selects_identically():
    a = make()
    run(a, Scene(torch.rand(P, generator=torch.Generator().manual_seed(7))), 15)
    state = a.state_dict()
    b = make()
    b.load_state_dict(state)
    for step in (15, 16):
        a.maybe_evolve(step)
        b.maybe_evolve(step)
        assert torch.equal(a.select().flat, b.select().flat)


def test_out_of_range_settings_name_the_flag():
    with pytest.raises(UserInputError, match="ratio must be in"):
        SelectorConfig(ratio=0).validate()
    with pytest.raises(UserInputError, match="importance-weights"):
        SelectorConfig(importance_weights=float("nan")).validate()
    with pytest.raises(UserInputError, match="softmining-refresh"):
        SelectorConfig(softmining_refresh=0).validate()


def test_importance_weight_exponent_ramps_over_its_warm_up_share_of_the_run():
    selector = make(total=100, importance_weights=1.0, importance_warmup=0.5)
    assert selector.weight_exponent(0) == pytest.approx(1 / 50)
    assert selector.weight_exponent(24) == pytest.approx(0.5)
    assert selector.weight_exponent(49) == selector.weight_exponent(99) == 1.0
