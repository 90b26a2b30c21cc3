import pytest
import torch

from evos_nerf.core.neighbourhood import BlockPrior, neighbourhood_estimate
from evos_nerf.core.pool import rank_pixels
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


def test_shrinkage_moves_each_measured_pixel_halfway_to_its_block_estimate():
    """k = 1 pseudo-observation: a measured pixel's score is (e + B) / 2, B its block's estimate; an
    unmeasured one's stays B; with the mean prior B is the global mean of the measured errors."""
    store = FitnessStore([(4, 4)], dtype=torch.float32)
    store.update(torch.tensor([0, 1, 4]), torch.tensor([1.0, 0.2, 0.3]))  # three pixels of the 2x2 block at (0, 0)
    global_mean = 1.5 / 3
    image_mean = (1.5 + global_mean) / 4
    block = (1.5 + image_mean) / 4
    e, _, _ = store.ranking_scores(False, prior_block=2, shrinkage=1.0)
    assert torch.allclose(e[[0, 1, 4]], (torch.tensor([1.0, 0.2, 0.3]) + block) / 2)
    assert torch.isclose(e[5], torch.tensor(block))  # unmeasured, same block
    assert torch.isclose(e[15], torch.tensor(image_mean))  # unmeasured block
    plain, _, _ = store.ranking_scores(False, prior_block=2)
    assert torch.allclose(plain[[0, 1, 4]], torch.tensor([1.0, 0.2, 0.3]))
    mean_prior, _, _ = store.ranking_scores(False, unvisited_prior="mean", shrinkage=3.0)
    assert torch.allclose(mean_prior[[0, 1, 4]], (torch.tensor([1.0, 0.2, 0.3]) + 3 * global_mean) / 4)
    assert torch.isclose(mean_prior[15], torch.tensor(global_mean))


def test_shrinkage_ranks_a_uniformly_hard_block_above_a_lone_outlier():
    """An 8x8 view, all measured: the top-right 4x4 block has error 0.5 everywhere, the top-left one
    0.02 but for one pixel at 0.7 (a misaligned edge pixel, say), the bottom half 0.02. A 16-pixel
    pool takes the outlier by its own error; shrunk toward its block it gives way to the hard block."""
    store = FitnessStore([(8, 8)], dtype=torch.float32)
    error = torch.full((8, 8), 0.02)
    error[:4, 4:] = 0.5
    error[1, 1] = 0.7
    store.update(torch.arange(64), error.reshape(-1))
    hard_block = set((torch.arange(64).view(8, 8)[:4, 4:]).reshape(-1).tolist())
    for shrinkage, has_outlier in ((0.0, True), (1.0, False)):
        pool, _ = rank_pixels(store, 16, "evos", torch.Generator().manual_seed(0), "none", stale_correction=False,
                              prior_block=4, shrinkage=shrinkage)
        members = set(pool.tolist())
        assert (9 in members) == has_outlier, shrinkage
        assert len(members - hard_block - {9}) == 0


def test_hierarchy_shrinks_a_fine_block_toward_its_coarser_block_not_the_image():
    """4x4 image, blocks 1 and 2 px: pixel (0, 0) is measured at 1.0 and (3, 3) at 0.0. The
    never-measured pixel (0, 1) takes the top-left 2x2 block's estimate, not the image's mean."""
    fitness = torch.zeros(16)
    measured = torch.zeros(16, dtype=torch.bool)
    fitness[0], measured[[0, 15]] = 1.0, True
    est = _estimate(fitness, measured, [(4, 4)], global_mean=0.5, block=(1, 2)).view(4, 4)
    image_mean = (1.0 + 0.0 + 0.5) / 3
    top_left = (1.0 + image_mean) / 2  # one measurement + one pseudo-observation at the image mean
    bottom_right = (0.0 + image_mean) / 2
    assert torch.isclose(est[0, 0], torch.tensor((1.0 + top_left) / 2))  # measured: own value + parent
    assert torch.isclose(est[0, 1], torch.tensor(top_left))  # empty fine block: its parent's estimate
    assert torch.isclose(est[2, 2], torch.tensor(bottom_right))
    assert torch.isclose(est[0, 3], torch.tensor(image_mean))  # empty parent: the image mean


def test_one_level_hierarchy_is_the_plain_block_estimate_and_borders_line_up():
    gen = torch.Generator().manual_seed(0)
    fitness = torch.rand(7 * 11, generator=gen)
    measured = torch.rand(7 * 11, generator=gen) < 0.3
    plain = _estimate(fitness, measured, [(7, 11)], global_mean=0.2, block=2)
    assert torch.equal(_estimate(fitness, measured, [(7, 11)], global_mean=0.2, block=(2,)), plain)
    # A coarse level of one block per image adds one more shrinkage step toward the image mean.
    deep = _estimate(fitness, measured, [(7, 11)], global_mean=0.2, block=(2, 16)).view(7, 11)
    image_mean = (float(fitness[measured].sum()) + 0.2) / (int(measured.sum()) + 1)
    coarse = (float(fitness[measured].sum()) + image_mean) / (int(measured.sum()) + 1)
    grid, seen = fitness.view(7, 11), measured.view(7, 11).float()
    corner = ((grid[6:, 10:] * seen[6:, 10:]).sum() + coarse) / (seen[6:, 10:].sum() + 1)  # 1x1 border block
    assert torch.isclose(deep[6, 10], corner)


def test_block_sizes_must_grow_by_whole_multiples():
    from evos_nerf.core.neighbourhood import block_sizes

    assert block_sizes(8) == (8,) and block_sizes([4, 8, 16]) == (4, 8, 16)
    for bad in ([4, 6], [8, 8], [0], []):
        with pytest.raises(ValueError, match="block sizes"):
            block_sizes(bad)


def _balanced_blocks(spread: float, noise: float) -> torch.Tensor:
    """A 4x4 image of 2x2 blocks with means 1.5 +- spread * (1.5, 0.5) and +-noise inside each block."""
    means = (torch.tensor([[0.0, 1.0], [2.0, 3.0]]) - 1.5) * spread + 1.5
    pattern = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]) * noise
    return (means[:, None, :, None] + pattern[None, :, None, :]).reshape(-1)


def test_fitted_pseudo_count_is_the_ratio_of_noise_to_block_spread():
    """Balanced 2x2 blocks, all measured: sigma^2 = 16 d^2 / 12 from the within-block residuals, and
    the between-block sum 4 * sum (m_b - 1.5)^2 = 20 s^2 exceeds 3 sigma^2 by tau^2 (16 - 64 / 16)."""
    from evos_nerf.core.neighbourhood import FITTED_RANGE, block_estimate, block_sums, fitted_pseudo_count

    def fitted(spread, noise):
        values = _balanced_blocks(spread, noise)
        seen = torch.ones(16)
        sums = [block_sums(v, 4, 4, 2) for v in (values, seen, values * values)]
        return fitted_pseudo_count(*sums, values.sum().view(1, 1), torch.full((1, 1), 16.0), 2)

    sigma2 = 16 / 12
    assert fitted(1.0, 1.0) == pytest.approx(sigma2 / ((20 - 3 * sigma2) / 12))  # = 1
    assert fitted(2.0, 1.0) == pytest.approx(sigma2 / ((80 - 3 * sigma2) / 12))
    assert fitted(0.0, 1.0) == FITTED_RANGE[1]  # blocks no different from the image: trust the image
    assert fitted(1.0, 0.0) == FITTED_RANGE[0]  # no noise inside blocks: trust each block
    # With k = 1 the fitted estimate is the fixed prior's.
    values, seen = _balanced_blocks(1.0, 1.0), torch.ones(16)
    assert torch.allclose(block_estimate(values, seen, 4, 4, 0.0, BlockPrior((2,), "fitted")),
                          block_estimate(values, seen, 4, 4, 0.0, 2))


def test_fitted_prior_falls_back_to_the_image_when_blocks_do_not_differ():
    values = _balanced_blocks(0.0, 1.0)
    est = _estimate(values, torch.ones(16, dtype=torch.bool), [(4, 4)], 0.0, BlockPrior((2,), "fitted"))
    image_mean = float(values.sum()) / 17  # 16 measurements + one pseudo-observation at 0
    assert torch.allclose(est, torch.full((16,), image_mean), atol=1e-4)


def test_fitted_hierarchy_levels_fit_within_their_parents():
    from evos_nerf.core.neighbourhood import FITTED_RANGE, block_sums, fitted_pseudo_count

    gen = torch.Generator().manual_seed(3)
    values = torch.rand(64, generator=gen) ** 2
    seen = (torch.rand(64, generator=gen) < 0.6).float()
    values = values * seen
    fine = [block_sums(v, 8, 8, 2) for v in (values, seen, values * values)]
    halves = [block_sums(v, 4, 4, 2) for v in fine]  # 4x4 px parents: the nested fit
    nested = fitted_pseudo_count(*fine, halves[0], halves[1], 2)
    assert 0 < nested < FITTED_RANGE[1]
    # Parents that are their blocks leave no spread to fit: one pseudo-observation, as unfitted.
    assert fitted_pseudo_count(*fine, fine[0], fine[1], 1) == 1.0


def test_too_few_measurements_keep_one_pseudo_observation():
    from evos_nerf.core.neighbourhood import block_estimate

    values, seen = torch.zeros(16), torch.zeros(16)
    values[0], seen[0] = 0.7, 1.0
    assert torch.equal(block_estimate(values, seen, 4, 4, 0.1, BlockPrior((2,), "fitted")),
                       block_estimate(values, seen, 4, 4, 0.1, 2))


def test_upper_bonus_adds_posterior_standard_deviations_of_each_block_mean():
    # A 2x6 image of three 2x2 blocks: block A holds 1 and 3, block B 2, 2, 4, 4, block C nothing.
    fitness = torch.zeros(12)
    measured = torch.zeros(12, dtype=torch.bool)
    values = {0: 1.0, 1: 3.0, 2: 2.0, 3: 2.0, 8: 4.0, 9: 4.0}  # flat indices of the 2x6 grid
    for index, value in values.items():
        fitness[index], measured[index] = value, True
    plain = _estimate(fitness, measured, [(2, 6)], 0.0, BlockPrior((2,), 1.0)).view(2, 6)
    bonus = _estimate(fitness, measured, [(2, 6)], 0.0, BlockPrior((2,), 1.0, bonus=2.0)).view(2, 6)
    within = (2.0 + 4.0) / (6 - 2)  # squares around each block's mean over n - blocks
    expected = 2.0 * torch.tensor([within / (2 + 1), within / (4 + 1), within / (0 + 1)]).sqrt()
    assert torch.allclose(bonus - plain, expected.repeat_interleave(2).expand(2, 6))


def test_upper_bonus_uses_the_fitted_strength_and_needs_a_spread_to_act():
    fitness, measured = torch.zeros(12), torch.zeros(12, dtype=torch.bool)
    for index, value in {0: 1.0, 1: 3.0, 2: 9.0, 3: 9.0, 8: 11.0, 9: 11.0}.items():  # block means 2 and 10
        fitness[index], measured[index] = value, True
    fitted = _estimate(fitness, measured, [(2, 6)], 0.0, BlockPrior((2,), "fitted")).view(2, 6)
    upper = _estimate(fitness, measured, [(2, 6)], 0.0, BlockPrior((2,), "fitted", bonus=1.0)).view(2, 6)
    assert bool((upper > fitted).all())
    # The bonus sqrt(sigma^2 / (n + k)) falls with measurements: largest (tau) for the empty block.
    gap = (upper - fitted)[0, ::2]  # blocks A (2 measurements), B (4), C (empty)
    assert float(gap[2]) > float(gap[0]) > float(gap[1])
    # One measurement per block: no spread inside blocks to size the bonus, so none is added.
    single, seen = torch.zeros(12), torch.zeros(12, dtype=torch.bool)
    single[[0, 2]], seen[[0, 2]] = torch.tensor([1.0, 5.0]), True
    assert torch.equal(_estimate(single, seen, [(2, 6)], 0.0, BlockPrior((2,), 1.0, bonus=1.0)),
                       _estimate(single, seen, [(2, 6)], 0.0, BlockPrior((2,), 1.0)))
