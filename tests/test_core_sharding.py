"""Sharding the fitness over ranks: a partition of the cameras, and mutation that stays unbiased."""

import torch

from evos_nerf.core.fitness_stats import summarise
from evos_nerf.core.sharding import assign_shards, mutant_count, mutation_scale
from evos_nerf.core.pool import CandidatePool
from evos_nerf.core.store import FitnessStore


def test_shards_partition_the_cameras_and_balance_pixels():
    counts = [100, 100, 400, 100, 100, 300, 200, 100]
    shards = assign_shards(counts, 3)
    flat = sorted(c for s in shards for c in s)
    assert flat == list(range(len(counts)))
    loads = [sum(counts[c] for c in s) for s in shards]
    assert max(loads) - min(loads) <= max(counts)
    assert assign_shards([5] * 6, 2) == [[0, 2, 4], [1, 3, 5]]  # equal sizes: round robin


def test_more_ranks_than_images_is_a_clear_error():
    try:
        assign_shards([10, 10], 3)
    except ValueError as err:
        assert "2 training images" in str(err) and "3 ranks" in str(err)
    else:
        raise AssertionError("expected a ValueError")


def test_mutant_count_keeps_its_expectation_under_stochastic_rounding():
    gen = torch.Generator().manual_seed(0)
    draws = [mutant_count(10, 0.25, 1.3, gen) for _ in range(4000)]
    assert set(draws) == {3, 4}
    assert abs(sum(draws) / len(draws) - 3.25) < 0.05
    assert mutant_count(10, 0.25, 1.0, gen) == 2  # one rank: plain rounding, no RNG draw


def test_mutation_is_uniform_over_unequal_shards():
    """Two ranks with 30 and 10 pixels, each with a pool of its own fittest: every pixel outside the
    pools is drawn as a mutant equally often, whichever shard holds it."""
    stores = [FitnessStore([(5, 6)], cameras=[0], num_cameras=2), FitnessStore([(2, 5)], cameras=[1], num_cameras=2)]
    pools = [CandidatePool(stores[0], torch.arange(12)), CandidatePool(stores[1], torch.arange(6))]
    total = sum(p.num_unselected for p in pools)  # 18 + 4
    gen = torch.Generator().manual_seed(1)
    hits = [torch.zeros(s.num_pixels) for s in stores]
    batch, share = 6, 0.5
    for _ in range(3000):
        for pool, h in zip(pools, hits):
            n = mutant_count(batch, share, mutation_scale(pool.num_unselected, total, 2), gen)
            flat, drawn = pool.draw(batch, n, gen)
            assert drawn == n
            h += torch.bincount(flat[batch - n:], minlength=h.numel())  # the mutants come last
    outside = torch.cat([hits[0][12:], hits[1][6:]]) / 3000
    assert float(torch.cat([hits[0][:12], hits[1][:6]]).sum()) == 0  # no mutant from a pool
    expected = 2 * batch * share / total
    assert torch.allclose(outside, torch.full_like(outside, expected), rtol=0.15)


def test_summary_quantiles_and_never_visited_share():
    store = FitnessStore([(10, 10)], dtype=torch.float32)
    values = torch.logspace(-4, -2, 50)
    store.update(torch.arange(50), values)
    s = summarise(store)
    assert abs(s.never_visited_share - 0.5) < 1e-9
    assert abs(s.fitness_mean - float(values.mean())) < 1e-9
    assert abs(s.fitness_p50 / 1e-3 - 1) < 0.15
    assert abs(s.fitness_p99 / 1e-2 - 1) < 0.15
    assert int(s.counts.sum()) == 50

