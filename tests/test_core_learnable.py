"""The learnable-error fitness: floors fitted on hand-built errors with known answers, and the loop
that feeds it (uniform draws flagged, probes at key iterations, persistent error left out)."""

import pytest
import torch

from evos_nerf.core.learnable import fit_floors, learnable_error
from evos_nerf.core.selector import RaySelector, SelectorConfig
from evos_nerf.core.store import FitnessStore

X = torch.linspace(1.0, 4.0, 7)
"""Level ratio x of seven epochs: the error level then over the level now."""


def test_the_floor_is_the_intercept_of_error_against_the_level_ratio():
    counts = torch.full((1, 7), 3.0)
    sums = counts * (0.2 + 0.1 * X)  # every uniform sample had e = 0.2 + 0.1 x
    assert torch.allclose(fit_floors(counts, sums, X), torch.tensor([0.2]), atol=1e-6)
    error = torch.tensor([0.6, 0.3, 0.0])  # measured at x = 4, 1, and never
    ratio = torch.tensor([4.0, 1.0, 1.0])
    assert torch.allclose(learnable_error(error, ratio, 0.2), torch.tensor([0.1, 0.1, 0.0]))


def test_error_that_does_not_fall_is_all_floor_and_nothing_is_learnable():
    counts = torch.full((2, 7), 3.0)
    sums = torch.stack([counts[0] * 0.5, counts[1] * (0.9 - 0.1 * X)])  # flat, and rising over the run
    floors = fit_floors(counts, sums, X)
    assert torch.allclose(floors, torch.tensor([0.5, float((0.9 - 0.1 * X).mean())]), atol=1e-6)
    assert learnable_error(torch.tensor([0.5]), torch.tensor([2.0]), float(floors[0])).abs().max() < 1e-6


def test_without_enough_samples_or_spread_in_x_all_error_is_learnable():
    sums = 0.2 + 0.1 * X
    few = torch.zeros(1, 7)
    few[0, :5] = 1.0
    assert fit_floors(few, few * sums, X).item() == 0
    one_epoch = torch.zeros(1, 7)
    one_epoch[0, 3] = 50.0
    assert fit_floors(one_epoch, one_epoch * sums, X).item() == 0


def test_images_are_fitted_separately():
    counts = torch.full((3, 7), 2.0)
    floors = torch.tensor([0.0, 0.1, 0.3])
    sums = counts * (floors[:, None] + 0.05 * X)
    assert torch.allclose(fit_floors(counts, sums, X), floors, atol=1e-6)


# -- the loop ----------------------------------------------------------------------------------

N = 4
SIDE = 8
P = N * SIDE * SIDE


class Capture:
    """Camera 0 has persistent error 0.5 (training never lowers it); the others start at 0.3, halve
    whenever trained and fall 3% a step anyway (a field generalises across pixels), like a scene a
    model can learn."""

    def __init__(self):
        self.base = torch.full((P,), 0.3)
        self.base[: SIDE * SIDE] = 0.5

    def train(self, flat):
        errors = self.base[flat].clone()
        learnable = flat >= SIDE * SIDE
        self.base[flat[learnable]] *= 0.5
        return errors

    def advance(self):
        self.base[SIDE * SIDE :] *= 0.97

    def measure(self, cyx):
        return self.base[cyx[:, 0] * SIDE * SIDE + cyx[:, 1] * SIDE + cyx[:, 2]]


def _selector(fitness: str) -> RaySelector:
    store = FitnessStore([(SIDE, SIDE)] * N, dtype=torch.float32, track_uniform=fitness == "learnable")
    config = SelectorConfig(init_interval=10, end_interval=10, fitness=fitness, ratio=0.25, mutation=0.2)
    selector = RaySelector(config, store, 16, torch.Generator().manual_seed(0), 200)
    selector.initialise(list(torch.rand(N, SIDE, SIDE, 3, generator=torch.Generator().manual_seed(1))))
    return selector


def _run(selector: RaySelector, capture: Capture, steps: int) -> None:
    for step in range(steps):
        selector.maybe_evolve(step, capture.measure)
        selection = selector.select()
        selector.observe(selection.flat, capture.train(selection.flat), step, uniform=selection.uniform)
        capture.advance()


def test_uniform_phases_and_probes_are_counted_pool_draws_are_not():
    selector = _selector("learnable")
    _run(selector, Capture(), 25)  # uniform until step 10, pools from then on
    assert selector.select().uniform is None
    per_epoch = selector.store.uniform[:, 0].sum(0)
    # steps 0-9: every ray uniform; steps 10 and 20: one batch of probes each (pool draws uncounted)
    assert per_epoch[per_epoch > 0].tolist() == [10 * 16, 16, 16]
    fresh = _selector("learnable")
    fresh.maybe_evolve(0)
    first = fresh.select()
    assert first.uniform is not None and bool(first.uniform.all())


def test_persistent_error_leaves_the_pool_with_the_learnable_fitness():
    shares = {}
    for fitness in ("error", "learnable"):
        selector = _selector(fitness)
        _run(selector, Capture(), 61)
        members = selector.pool.members()
        shares[fitness] = float((members < SIDE * SIDE).float().mean())
    assert shares["error"] > 0.9  # plain error ranking: the persistent camera fills the pool
    assert shares["learnable"] < 0.5 * shares["error"]


def test_the_learnable_fitness_needs_a_store_that_tracks_uniform_draws():
    store = FitnessStore([(SIDE, SIDE)])
    with pytest.raises(ValueError, match="track_uniform"):
        RaySelector(SelectorConfig(fitness="learnable"), store, 16, torch.Generator(), 100)


def test_uniform_flags_round_trip_through_the_sharded_state():
    selector = _selector("learnable")
    _run(selector, Capture(), 25)
    state = {k: v.clone() for k, v in selector.sharded_state().items()}
    sums = selector.store.uniform.clone()
    _run(selector, Capture(), 200)  # grows the per-epoch sums past their initial 16 epochs
    state = {k: v.clone() for k, v in selector.sharded_state().items()}
    sums = selector.store.uniform.clone()
    assert sums.shape[2] > 16
    fresh = _selector("learnable")
    fresh.load_sharded_state(state, same_world_size=True)
    assert torch.equal(fresh.store.uniform[:, :, : sums.shape[2]], sums)


def test_shards_agree_on_the_uniform_error_level_of_the_whole_store():
    def filled(cameras):
        store = FitnessStore([(SIDE, SIDE)] * len(cameras), cameras=cameras, num_cameras=2, track_uniform=True)
        for epoch, level in enumerate((0.4, 0.2, 0.1), start=1):
            store.current_epoch = epoch
            for camera in cameras:
                flat = store.flat_index(torch.full((4,), camera), torch.arange(4), torch.arange(4))
                error = torch.full((4,), level * (1 + camera))
                store.update(flat, error, trained=False, uniform=torch.ones(4, dtype=torch.bool))
        return store

    whole, first, second = filled([0, 1]), filled([0]), filled([1])
    local = lambda s: s.uniform[:, :, : s.current_epoch + 1].sum(0)  # noqa: E731
    expected = whole.uniform_level_ratios()
    assert torch.allclose(expected[1:4], torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64))
    assert torch.allclose(first.uniform_level_ratios(lambda t: t + local(second)), expected)
    assert torch.allclose(second.uniform_level_ratios(lambda t: t + local(first)), expected)
