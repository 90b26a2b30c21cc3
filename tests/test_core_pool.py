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
