"""The candidate pool as membership bits: uniform draws, exact per-image bits, the stalest members."""

import torch

from evos_nerf.core import pool as pool_module
from evos_nerf.core.pool import CandidatePool
from evos_nerf.core.store import FitnessStore


def test_members_are_drawn_uniformly_whether_listed_or_found_in_the_bits():
    store = FitnessStore([(20, 20)])
    dense = CandidatePool(store, torch.arange(0, 400, 2))  # half the pixels: drawn from the bits
    sparse = CandidatePool(store, torch.arange(0, 400, 10))  # a tenth: the members are listed too
    assert dense.sparse_members is None and sparse.sparse_members is not None
    gen = torch.Generator().manual_seed(0)
    for pool, members in ((dense, 200), (sparse, 40)):
        counts = torch.zeros(400)
        for _ in range(1000):
            flat, mutants = pool.draw(16, 4, gen)
            assert mutants == 4 and flat.unique().numel() == 16
            assert bool(pool.contains(flat[:12]).all()) and not bool(pool.contains(flat[12:]).any())
            counts += torch.bincount(flat[:12], minlength=400)
        share = counts[pool.contains(torch.arange(400))] / 1000
        assert share.numel() == members
        assert abs(float(share.mean()) - 12 / members) < 1e-6 and float(share.std()) < 0.25 * 12 / members


def test_per_image_bits_round_trip_when_images_do_not_start_on_a_byte():
    store = FitnessStore([(3, 3), (2, 5), (4, 4), (1, 1)])
    members = torch.tensor([0, 4, 8, 9, 13, 18, 19, 33, 35])
    pool = CandidatePool(store, members)
    bits = [pool.image_bits(i) for i in range(store.num_images)]
    assert [b.numel() for b in bits] == [2, 2, 2, 1]
    assert bits[1].tolist() == [0b10001, 0b10]  # pixels 9, 13 and 18: the 1st, 5th and 10th of image 1
    restored = CandidatePool.from_image_bits(store, bits)
    assert torch.equal(restored.bits, pool.bits) and torch.equal(restored.members(), members)


def test_re_measurement_takes_the_members_of_the_oldest_epochs():
    store = FitnessStore([(10, 10)])
    store.update(torch.arange(0, 30), torch.ones(30))  # epoch 1
    store.close_epoch(1.0, 30.0)
    store.update(torch.arange(30, 100), torch.ones(70))  # epoch 2
    pool = CandidatePool(store, torch.arange(20, 60))
    stale = pool.stalest(8, torch.Generator().manual_seed(0))
    assert stale.numel() == 8 and bool((stale >= 20).all() & (stale < 30).all())
    assert torch.equal(pool.stalest(100, torch.Generator()), torch.arange(20, 60))  # all of a small pool


def test_stalest_of_a_large_pool_looks_at_a_sample(monkeypatch):
    monkeypatch.setattr(pool_module, "STALEST_SAMPLE", 4)
    store = FitnessStore([(100, 100)])
    store.update(torch.arange(5000, 10000), torch.ones(5000))  # half measured, half never (oldest)
    pool = CandidatePool(store, torch.arange(0, 10000, 2))
    stale = pool.stalest(50, torch.Generator().manual_seed(1))
    assert stale.numel() == 50 and bool((stale < 5000).all())  # never-measured members first


def test_fitness_draw_is_proportional_to_the_root_error_when_the_pool_fits_in_the_candidates():
    store = FitnessStore([(10, 10)])
    store.update(torch.arange(100), torch.arange(100).float() ** 2 / 100)  # root error = index / 10
    pool = CandidatePool(store, torch.tensor([10, 20, 30, 40]))  # sparse: all 4 are candidates
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(100)
    for _ in range(5000):  # with replacement: a member may come twice in one batch
        flat, mutants = pool.draw(4, 0, gen, pool_module.live_importance(store), candidates=8)
        assert mutants == 0 and bool(pool.contains(flat).all())
        counts += torch.bincount(flat, minlength=100)
    share = counts[[10, 20, 30, 40]] / counts.sum()
    assert torch.allclose(share, torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.01)


def test_fitness_draw_keeps_mutants_uniform_outside_the_pool_and_tends_to_proportional():
    store = FitnessStore([(40, 50)])
    hot = torch.arange(0, 1000, 2)
    error = torch.full((2000,), 0.01)
    error[hot[:100]] = 1.0  # a fifth of the pool has 10x the root error of the rest
    store.update(torch.arange(2000), error)
    pool = CandidatePool(store, torch.arange(0, 1000))
    gen = torch.Generator().manual_seed(1)
    hot_share, outside = [], torch.zeros(2000)
    for _ in range(300):
        flat, mutants = pool.draw(64, 16, gen, pool_module.live_importance(store), candidates=16)
        assert mutants == 16 and not bool(pool.contains(flat[48:]).any())
        hot_share.append(float(torch.isin(flat[:48], hot[:100]).float().mean()))
        outside += torch.bincount(flat[48:], minlength=2000)
    # exact proportional share: 100 * 10 / (100 * 10 + 900 * 1) = 0.526; a uniform draw gives 0.1
    assert abs(sum(hot_share) / len(hot_share) - 0.526) < 0.04
    rest = outside[1000:]
    assert float(rest.sum()) == 300 * 16 and float(rest.std() / rest.mean()) < 0.5


def test_fitness_draw_treats_stale_and_never_measured_members_like_the_ranking():
    store = FitnessStore([(1, 4)])
    store.update(torch.tensor([0, 1]), torch.tensor([4.0, 4.0]))  # epoch 1, level 4
    store.close_epoch(4.0, 1.0)
    store.update(torch.tensor([1]), torch.tensor([1.0]))  # pixel 1 again in epoch 2, level 1
    store.close_epoch(1.0, 1.0)
    weight = pool_module.live_importance(store)(torch.arange(4))
    # pixel 0: 4 measured when the level was 4, now 1 -> estimate 1; pixel 1: 1; 2 and 3: their mean
    assert torch.allclose(weight, torch.ones(4))
    assert torch.allclose(pool_module.live_importance(store, stale_correction=False)(torch.arange(4)),
                          torch.tensor([2.0, 1.0, 1.5, 1.5]))
    squared = pool_module.live_importance(store, stale_correction=False, power=2.0)(torch.arange(4))
    assert torch.allclose(squared, torch.tensor([4.0, 1.0, 2.5, 2.5]))  # the squared error itself
