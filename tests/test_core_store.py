import torch

from evos_nerf.core.pool import rank_pixels
from evos_nerf.core.store import FitnessStore


def test_flat_index_round_trips_across_images_of_different_sizes():
    store = FitnessStore([(4, 5), (3, 3), (2, 7)])
    assert store.num_pixels == 20 + 9 + 14
    flat = torch.arange(store.num_pixels)
    cyx = store.unflatten(flat)
    assert torch.equal(store.flat_index(cyx[:, 0], cyx[:, 1], cyx[:, 2]), flat)
    assert cyx[20].tolist() == [1, 0, 0] and cyx[-1].tolist() == [2, 1, 6]


def test_stale_errors_are_scaled_by_the_fall_of_the_mean_error():
    store = FitnessStore([(1, 4)], dtype=torch.float32)
    store.update(torch.tensor([0, 1]), torch.tensor([0.8, 0.4]), step=0)  # mean 0.6 at step 0
    for step in range(1, 40):
        store.update(torch.tensor([2]), torch.tensor([0.06]), step=step)  # mean error fell 10x
    e = store.corrected_fitness(True, torch.Generator().manual_seed(0))
    assert e[2] == torch.tensor(0.06)  # fresh: unchanged
    assert 0.05 < float(e[0]) < 0.2 and float(e[0]) / float(e[1]) == 2.0  # stale: rescaled, order kept
    # never visited: the mean of visited (corrected) errors, with a tiny tie-break
    assert abs(float(e[3]) - float(e[:3].mean())) < 1e-3 * float(e[:3].mean()) + 1e-9


def test_crossover_balance_is_in_error_units_and_adapts_to_edges():
    store = FitnessStore([(8, 8)], dtype=torch.float32)
    image = torch.zeros(8, 8, 3)
    image[:, 4:] = 1.0  # one vertical edge
    store.initialise([image])
    assert abs(float(store.edges.mean()) - 1.0) < 1e-5
    edge = store.edges > 0
    errors = torch.where(edge, 1.0, 0.01)  # error concentrated on the edge
    store.update(torch.arange(64), errors, step=1)
    pool, balance = rank_pixels(store, 8, "evos", 1, torch.Generator(), "select", stale_correction=False)
    assert balance < 0.5  # p falls below 1/2 exactly when error sits on edges
    assert bool(edge[pool].all())


def test_staleness_control_ranks_longest_untrained_first():
    store = FitnessStore([(1, 5)])
    store.update(torch.tensor([0, 1, 2]), torch.ones(3), step=3)
    store.update(torch.tensor([1]), torch.ones(1), step=9)
    pool, _ = rank_pixels(store, 3, "staleness", 10, torch.Generator())
    assert {3, 4} < set(pool.tolist())  # never visited first
    assert 1 not in pool.tolist()  # the most recently trained pixel last


def test_image_that_does_not_match_its_camera_is_named():
    import pytest

    store = FitnessStore([(4, 4), (4, 4)])
    with pytest.raises(ValueError, match="b.png is 5x4 but its camera is 4x4"):
        store.initialise([torch.rand(4, 4, 3), torch.rand(4, 5, 3)], names=["a.png", "b.png"])
