"""The relative fitness: each view ranks its own hard pixels, whatever its overall error level.

Hand-built captures with known answers: two views with the same hard region, one of them ten
times as wrong everywhere (a blurred or badly exposed photo). Ranked by raw error the bad view
takes the whole pool; ranked by error relative to its own mean, each view gives its hard region.
"""

import torch

from evos_nerf.core.pool import rank_pixel_mask
from evos_nerf.core.selector import RaySelector, SelectorConfig
from evos_nerf.core.store import FitnessStore

SIDE = 8
PIXELS = SIDE * SIDE


def two_views(scale: float = 10.0, masked: bool = False, **config) -> RaySelector:
    """Views 0 and 1: error 1 everywhere but 4 in the top two rows (16 pixels); view 1 x ``scale``.

    Set up through a selector, as the datamanager does; ``config`` goes to its ``SelectorConfig``."""
    masks = None
    if masked:  # view 0 loses its bottom half, so its mean is over the top half only
        mask0 = torch.ones(SIDE, SIDE, dtype=torch.bool)
        mask0[SIDE // 2:] = False
        masks = [mask0, torch.ones(SIDE, SIDE, dtype=torch.bool)]
    selector = RaySelector(SelectorConfig(**config), FitnessStore([(SIDE, SIDE), (SIDE, SIDE)]), 16,
                           torch.Generator().manual_seed(0), total_steps=100)
    selector.initialise([torch.rand(SIDE, SIDE, 3, generator=torch.Generator().manual_seed(i)) for i in range(2)], masks)
    pattern = torch.ones(PIXELS)
    pattern[: 2 * SIDE] = 4.0
    selector.store.update(torch.arange(2 * PIXELS), torch.cat([pattern, scale * pattern]))
    return selector


def pool_of(store: FitnessStore, size: int, fitness: str) -> torch.Tensor:
    mask, _ = rank_pixel_mask(store, size, "evos", torch.Generator().manual_seed(0), "none", fitness=fitness)
    return mask.nonzero().squeeze(1)


def test_raw_error_gives_the_whole_pool_to_the_view_that_is_wrong_everywhere():
    members = pool_of(two_views().store, 32, "error")
    assert bool((members >= PIXELS).all())  # all 32 from view 1, though only 16 of them are its hard region


def test_relative_error_gives_each_view_its_own_hard_region():
    members = pool_of(two_views().store, 32, "relative")
    hard = torch.cat([torch.arange(2 * SIDE), PIXELS + torch.arange(2 * SIDE)])
    assert torch.equal(members, hard)


def test_relative_error_is_over_valid_pixels_and_never_selects_masked_ones():
    store = two_views(scale=1.0, masked=True).store
    e, _, _ = store.ranking_scores(True, fitness="relative")
    valid0 = torch.arange(PIXELS) < PIXELS // 2
    # view 0's valid half: 16 pixels at 4 and 16 at 1, mean 2.5; view 1's whole: 16 at 4, 48 at 1, mean 1.75
    assert torch.allclose(e[: 2 * SIDE], torch.full((2 * SIDE,), 4 / 2.5))
    assert torch.allclose(e[2 * SIDE:PIXELS // 2], torch.full((2 * SIDE,), 1 / 2.5))
    assert bool(torch.isneginf(e[:PIXELS][~valid0]).all())
    assert torch.allclose(e[PIXELS:PIXELS + 2 * SIDE], torch.full((2 * SIDE,), 4 / 1.75))
    members = pool_of(store, 40, "relative")
    assert bool(valid0[members[members < PIXELS]].all())


def test_the_selector_trains_both_views_hard_regions_under_relative_fitness():
    selector = two_views(ratio=0.25, mutation=0.0, fitness="relative", init_interval=10, end_interval=10)
    step = 0
    while not selector.maybe_evolve(step):
        step += 1
    flat = selector.select().flat
    assert bool((flat % PIXELS < 2 * SIDE).all())
    assert bool((flat < PIXELS).any()) and bool((flat >= PIXELS).any())
