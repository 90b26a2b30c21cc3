"""The EVOS pixel sampler on hand-built image batches with known answers."""

import pytest
import torch

from evos_nerf.core.store import FitnessStore
from evos_nerf.nerfstudio.sampler import EvosPixelSamplerConfig

H, W, N = 6, 8, 3


def _setup(strategy="evos", batch=32, mutation=0.25, selection=0.25, mask=None):
    cfg = EvosPixelSamplerConfig(strategy=strategy, mutation_ratio=mutation, selection_ratio=selection)
    sampler = cfg.setup(num_rays_per_batch=batch)
    store = FitnessStore([(H, W)] * N)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(N, H, W, 3, generator=gen)
    store.initialise(list(images), None if mask is None else list(mask))
    sampler.attach(store, gen)
    # Cameras arrive in a shuffled order: batch position != camera index.
    order = torch.tensor([2, 0, 1])
    image_batch = {"image": images[order], "image_idx": order}
    if mask is not None:
        image_batch["mask"] = mask[order]
    return sampler, store, images, image_batch


def test_batch_size_is_exact_and_indices_are_absolute_and_in_bounds():
    sampler, _, images, image_batch = _setup()
    out = sampler.sample(image_batch)
    c, y, x = out["indices"].unbind(-1)
    assert out["image"].shape == (32, 3) and out["indices"].shape == (32, 3)
    assert bool(((c >= 0) & (c < N) & (y >= 0) & (y < H) & (x >= 0) & (x < W)).all())
    # Pixel values belong to the absolute camera in indices[:, 0], not to the batch position.
    assert torch.equal(out["image"], images[c, y, x])


def test_masked_pixels_are_never_chosen():
    mask = torch.ones(N, H, W, 1, dtype=torch.bool)
    mask[:, :, : W // 2] = False
    sampler, store, _, image_batch = _setup(mask=mask)
    store.update(torch.arange(store.num_pixels), torch.rand(store.num_pixels), 1)  # errors even where masked
    store.rank(20, step=1)
    for _ in range(20):
        out = sampler.sample(image_batch)
        assert bool((out["indices"][:, 2] >= W // 2).all())
        assert bool(out["mask"].all())


def test_mutation_share_is_respected_and_mutants_come_from_outside_the_pool():
    sampler, store, _, image_batch = _setup(batch=40, mutation=0.25, selection=0.5)
    store.update(torch.arange(store.num_pixels), torch.rand(store.num_pixels), 1)
    pool = store.rank(int(0.5 * store.num_pixels), step=1)
    out = sampler.sample(image_batch)
    flat = store.flat_index(*out["indices"].unbind(-1))
    in_pool = torch.isin(flat, pool)
    assert int((~in_pool).sum()) == 10 == sampler.last_num_mutants
    assert flat.unique().numel() == 40


def test_topk_strategy_chooses_only_the_top_fitness_pixels():
    sampler, store, _, image_batch = _setup(strategy="topk", batch=16)
    fitness = torch.arange(store.num_pixels, dtype=torch.float32)
    store.update(torch.arange(store.num_pixels), fitness, 1)
    store.rank(16, "topk", step=1)
    flat = store.flat_index(*sampler.sample(image_batch)["indices"].unbind(-1))
    assert set(flat.tolist()) == set(range(store.num_pixels - 16, store.num_pixels))


def test_uniform_before_any_ranking_and_with_the_uniform_strategy():
    sampler, store, _, image_batch = _setup(strategy="uniform", batch=32)
    seen = torch.zeros(store.num_pixels, dtype=torch.bool)
    for _ in range(30):
        seen[store.flat_index(*sampler.sample(image_batch)["indices"].unbind(-1))] = True
    assert float(seen.float().mean()) > 0.9


def test_nan_errors_are_skipped_not_stored():
    store = FitnessStore([(2, 2)])
    skipped = store.update(torch.tensor([0, 1, 2]), torch.tensor([0.5, float("nan"), float("inf")]), 3)
    assert skipped == 2
    assert store.last_step.tolist() == [3, -1, -1, -1]
    assert float(store.fitness[0]) == 0.5


def test_variable_resolution_batches_gather_from_the_right_camera():
    sizes = [(4, 6), (5, 3), (2, 8)]
    cfg = EvosPixelSamplerConfig(mutation_ratio=0.5)
    sampler = cfg.setup(num_rays_per_batch=24)
    store = FitnessStore(sizes)
    gen = torch.Generator().manual_seed(1)
    images = [torch.rand(h, w, 3, generator=gen) for h, w in sizes]
    store.initialise(images)
    sampler.attach(store, gen)
    order = [1, 2, 0]
    image_batch = {"image": [images[i] for i in order], "image_idx": torch.tensor(order)}
    store.update(torch.arange(store.num_pixels), torch.rand(store.num_pixels), 1)
    store.rank(10, step=1)
    for _ in range(5):
        out = sampler.sample(image_batch)
        assert out["image"].shape == (24, 3)
        for (c, y, x), rgb in zip(out["indices"].tolist(), out["image"]):
            assert y < sizes[c][0] and x < sizes[c][1]
            assert torch.equal(rgb, images[c][y, x])


def test_bad_sampler_settings_are_named():
    for kwargs, name in (({"selection_ratio": 1.5}, "selection-ratio"), ({"mutation_ratio": -0.1}, "mutation-ratio"),
                         ({"prior_block": 0}, "prior-block"), ({"refresh_budget": -1}, "refresh-budget")):
        with pytest.raises(ValueError, match=name):
            EvosPixelSamplerConfig(**kwargs).validate()
