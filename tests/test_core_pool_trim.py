"""The trimmed pool (``pool-trim``): ranks trim + 1 to trim + k, the trimmed top left to mutation.

Known answers on hand-built errors; the selector loop uses the fake scene of test_core_selector.
"""

import math

import pytest
import torch

from evos_nerf.core.pool import rank_pixel_mask, trimmed_top_k_mask
from evos_nerf.core.selector import SelectorConfig
from evos_nerf.core.store import FitnessStore
from evos_nerf.errors import UserInputError
from test_core_selector import P, Scene, make, run


def test_the_pool_is_the_ranks_after_the_trimmed_top():
    score = torch.tensor([5.0, 9.0, 1.0, 7.0, 8.0, 3.0, 10.0, 6.0, 2.0, 4.0])
    mask = trimmed_top_k_mask(score, 3, 2, torch.Generator().manual_seed(0))
    assert sorted(score[mask].tolist()) == [6.0, 7.0, 8.0]  # 10 and 9 trimmed


def test_no_trim_is_the_plain_top_k():
    score = torch.rand(100, generator=torch.Generator().manual_seed(0))
    mask = trimmed_top_k_mask(score, 10, 0, torch.Generator().manual_seed(0))
    assert set(mask.nonzero().squeeze(1).tolist()) == set(torch.topk(score, 10).indices.tolist())


def test_ties_never_put_a_pixel_in_both_the_trimmed_top_and_the_pool():
    """Every never-visited pixel of a block shares its block's estimate: ties straddle both cuts."""
    score = torch.cat([torch.full((40,), 2.0), torch.full((60,), 1.0)])
    for seed in range(5):
        mask = trimmed_top_k_mask(score, 30, 25, torch.Generator().manual_seed(seed))
        assert int(mask.sum()) == 30
        assert int((mask & (score == 2.0)).sum()) == 15  # the 15 tied top values the trim left
    # A trim that takes every valid value leaves an empty pool; NaN (masked) never enters.
    assert not trimmed_top_k_mask(torch.tensor([1.0, math.nan, 2.0]), 2, 2, torch.Generator()).any()


def test_the_ranking_trims_only_evos():
    store = FitnessStore([(4, 4)], dtype=torch.float32)
    store.update(torch.arange(16), torch.arange(16, dtype=torch.float32))
    gen = torch.Generator().manual_seed(0)
    evos, _ = rank_pixel_mask(store, 4, "evos", gen, "none", stale_correction=False, trim=3)
    assert evos.nonzero().squeeze(1).tolist() == [9, 10, 11, 12]  # 15, 14, 13 trimmed
    topk, _ = rank_pixel_mask(store, 4, "topk", gen, "none", trim=3)
    assert topk.nonzero().squeeze(1).tolist() == [12, 13, 14, 15]
    with pytest.raises(ValueError, match="without crossover"):
        rank_pixel_mask(store, 4, "evos", gen, "select", stale_correction=False, trim=3)


def test_trimmed_pixels_are_trained_at_the_mutants_rate_not_starved():
    """One hard tenth that never learns (persistent error). Untrimmed, the pool holds it and it is
    drawn at the pool's density; trimmed, it is drawn only as a mutant, at the mutants' density."""
    hard = P // 10
    base = torch.full((P,), 0.1)
    base[:hard] = 1.0
    shares = {}
    for trim in (0.0, 0.1):
        selector = make(batch=64, total=200, pool_trim=trim, ratio=0.5, mutation=0.5)
        run(selector, Scene(base, learns=False), 60)
        assert selector.pool.size == P - math.floor(0.75 * P)  # the pool's size is unchanged by the trim
        in_pool = selector.pool.contains(torch.arange(hard))
        assert bool(in_pool.all()) == (trim == 0.0) and bool(in_pool.any()) == (trim == 0.0)
        visits = selector.store.visits.float()
        shares[trim] = float(visits[:hard].sum() / visits.sum())
    # Batch: half from the pool (a quarter of the pixels), half mutants from the other three quarters.
    assert shares[0.0] > 0.15  # pool density 2 / P per ray: about 0.2 of the batch
    assert 0.04 < shares[0.1] < 0.1  # mutant density 2 / (3 P): about 0.067


def test_out_of_range_or_unsupported_trims_name_the_flag():
    for bad in (-0.1, 1.0, math.nan):
        with pytest.raises(UserInputError, match="pool-trim must be in"):
            SelectorConfig(pool_trim=bad).validate()
    with pytest.raises(UserInputError, match="pool-trim needs .*strategy evos .*got topk"):
        SelectorConfig(strategy="topk", pool_trim=0.05).validate()
    with pytest.raises(UserInputError, match="pool-trim needs .*crossover none"):
        SelectorConfig(crossover="select", pool_trim=0.05).validate()
    SelectorConfig(pool_trim=0.05).validate()


def test_the_trim_starts_at_its_share_of_the_run():
    """``pool-trim-start 0.5`` over 200 steps: the hard tenth is in the pool at every ranking before
    step 100 and out of it from the first ranking at or after it (key iterations every 10 steps)."""
    hard = P // 10
    base = torch.full((P,), 0.1)
    base[:hard] = 1.0
    scene = Scene(base, learns=False)
    selector = make(batch=64, total=200, pool_trim=0.1, pool_trim_start=0.5, ratio=0.5, mutation=0.5)
    held = {}
    for step in range(120):
        selector.maybe_evolve(step, scene.measure)
        if selector.pool is not None and step % 10 == 9:
            held[step] = int(selector.pool.contains(torch.arange(hard)).sum())
        selection = selector.select()
        selector.observe(selection.flat, scene.train(selection.flat), step)
    assert [step for step in held if step < 100 and held[step] < hard] == []  # trained at the pool's density
    assert [held[step] for step in held if step >= 100] == [0, 0]  # trimmed, left to the mutants
    assert not selector.trims(99) and selector.trims(100)


def test_a_trim_start_out_of_range_or_without_a_trim_names_the_flag():
    for bad in (-0.1, 1.0, math.nan):
        with pytest.raises(UserInputError, match="pool-trim-start must be in"):
            SelectorConfig(pool_trim=0.05, pool_trim_start=bad).validate()
    with pytest.raises(UserInputError, match="pool-trim-start needs .*pool-trim > 0"):
        SelectorConfig(pool_trim_start=0.5).validate()
    SelectorConfig(pool_trim=0.05, pool_trim_start=0.5).validate()
