import torch

from evos_nerf.core.pool import rank_pixels

from evos_nerf.core.neighbourhood import neighbourhood_estimate
from evos_nerf.core.store import FitnessStore, pixel_offsets


def _estimate(fitness, measured, sizes, global_mean, block):
    heights = torch.tensor([h for h, _ in sizes])
    widths = torch.tensor([w for _, w in sizes])
    return neighbourhood_estimate(fitness, measured, pixel_offsets(heights * widths), heights, widths, global_mean, block)


def test_block_estimate_is_the_block_mean_shrunk_toward_the_image_mean():
    fitness = torch.zeros(16)
    measured = torch.zeros(16, dtype=torch.bool)
    top_left = torch.tensor([0, 1, 4, 5])  # the 2x2 block at (0, 0) of a 4x4 image
    fitness[top_left], measured[top_left] = 1.0, True
    est = _estimate(fitness, measured, [(4, 4)], global_mean=0.0, block=2).view(4, 4)
    image_mean = (4 * 1.0 + 1 * 0.0) / (4 + 1)  # one pseudo-observation at the global mean
    assert torch.allclose(est[:2, :2], torch.full((2, 2), (4 + image_mean) / 5))
    assert torch.allclose(est[2:, :], torch.full((2, 4), image_mean))  # empty blocks: the image mean
    assert torch.allclose(est[:2, 2:], torch.full((2, 2), image_mean))


def test_unmeasured_values_are_ignored_and_unvisited_images_take_the_global_mean():
    fitness = torch.full((6 + 4,), 99.0)  # garbage where not measured must not leak in
    measured = torch.zeros(10, dtype=torch.bool)
    fitness[0], measured[0] = 0.5, True
    est = _estimate(fitness, measured, [(2, 3), (2, 2)], global_mean=0.3, block=4)
    assert torch.allclose(est[:6], torch.full((6,), ((0.5 + 0.3) / 2 + 0.5) / 2))  # one block covers image 0
    assert torch.allclose(est[6:], torch.full((4,), 0.3))


def test_borders_of_sizes_that_are_not_multiples_of_the_block():
    fitness = torch.arange(15, dtype=torch.float32)
    measured = torch.ones(15, dtype=torch.bool)
    est = _estimate(fitness, measured, [(5, 3)], global_mean=0.0, block=2).view(5, 3)
    # bottom-right block holds only pixel (4, 2) = 14 (the padding is not counted)
    image_mean = fitness.sum() / 16
    assert torch.isclose(est[4, 2], (14 + image_mean) / 2)


def test_pool_follows_measured_neighbours_instead_of_random_unvisited_pixels():
    """Half of a 32x32 image has high error; a sparse 1-in-16 sample of pixels was measured.
    With the neighbourhood prior the pool lies in the high-error half; with the global mean it is
    half random."""
    store = FitnessStore([(32, 32)], dtype=torch.float32)
    grid = torch.arange(32 * 32).view(32, 32)
    sampled = grid[::4, ::4].reshape(-1)
    error = torch.where(sampled % 32 < 16, 0.5, 0.01)  # left half hard
    store.update(sampled, error)
    for prior, lo, hi in (("neighbourhood", 0.99, 1.0), ("mean", 0.4, 0.75)):
        pool, _ = rank_pixels(store, 256, "topk", torch.Generator().manual_seed(0), unvisited_prior=prior, prior_block=8)
        left = float((pool % 32 < 16).float().mean())
        assert lo <= left <= hi, (prior, left)
