"""The nerfstudio sampler adapter on hand-built image batches: it gathers what the selector chose."""

import pytest
import torch

from evos_nerf.core.selector import RaySelector
from evos_nerf.core.store import FitnessStore
from evos_nerf.errors import UserInputError
from evos_nerf.nerfstudio.sampler import EvosPixelSamplerConfig

H, W, N = 6, 8, 3


def _setup(batch=32, mask=None, sizes=None, **kw):
    cfg = EvosPixelSamplerConfig(init_interval=2, end_interval=2, **kw)
    sampler = cfg.setup(num_rays_per_batch=batch)
    sizes = sizes or [(H, W)] * N
    store = FitnessStore(sizes, dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(h, w, 3, generator=gen) for h, w in sizes]
    selector = RaySelector(cfg, store, batch, gen, total_steps=100)
    selector.initialise(images, None if mask is None else list(mask))
    sampler.attach(selector)
    return sampler, selector, images


def _train(selector, steps=4):
    """Measured errors everywhere (also where masked), then a key iteration."""
    store = selector.store
    for step in range(steps):
        selector.maybe_evolve(step)
        selector.observe(torch.arange(store.num_pixels), torch.rand(store.num_pixels), step)


def test_batch_size_is_exact_and_indices_are_absolute_and_in_bounds():
    sampler, _, images = _setup()
    order = torch.tensor([2, 0, 1])  # cameras arrive shuffled: batch position != camera index
    image_batch = {"image": torch.stack(images)[order], "image_idx": order}
    out = sampler.sample(image_batch)
    c, y, x = out["indices"].unbind(-1)
    assert out["image"].shape == (32, 3) and out["indices"].shape == (32, 3)
    assert bool(((c >= 0) & (c < N) & (y >= 0) & (y < H) & (x >= 0) & (x < W)).all())
    assert torch.equal(out["image"], torch.stack(images)[c, y, x])  # the absolute camera's pixel


def test_masked_pixels_are_never_chosen():
    mask = torch.ones(N, H, W, 1, dtype=torch.bool)
    mask[:, :, : W // 2] = False
    for strategy in ("evos", "uniform", "softmining", "errormap"):
        sampler, selector, images = _setup(mask=mask, strategy=strategy, errormap_window=1)
        image_batch = {"image": torch.stack(images), "image_idx": torch.arange(N), "mask": mask}
        _train(selector)
        for _ in range(10):
            out = sampler.sample(image_batch)
            assert bool((out["indices"][:, 2] >= W // 2).all()), strategy
            assert bool(out["mask"].all())


def test_weights_travel_with_the_batch_when_the_selector_gives_them():
    sampler, selector, images = _setup(strategy="softmining", softmining_refresh=1)
    image_batch = {"image": torch.stack(images), "image_idx": torch.arange(N)}
    _train(selector)
    out = sampler.sample(image_batch)
    assert out["ray_weights"].shape == (32,) and "evos_flat" in out
    sampler, selector, images = _setup(strategy="uniform")
    assert "ray_weights" not in sampler.sample({"image": torch.stack(images), "image_idx": torch.arange(N)})


def test_variable_resolution_batches_gather_from_the_right_camera():
    sizes = [(4, 6), (5, 3), (2, 8)]
    sampler, selector, images = _setup(batch=24, sizes=sizes)
    order = [1, 2, 0]
    image_batch = {"image": [images[i] for i in order], "image_idx": torch.tensor(order)}
    _train(selector)
    for _ in range(5):
        out = sampler.sample(image_batch)
        assert out["image"].shape == (24, 3)
        for (c, y, x), rgb in zip(out["indices"].tolist(), out["image"]):
            assert y < sizes[c][0] and x < sizes[c][1]
            assert torch.equal(rgb, images[c][y, x])


def test_bad_sampler_settings_are_named():
    for kwargs, name in (({"ratio": 1.5}, "ratio"), ({"mutation": -0.1}, "mutation"),
                         ({"prior_block": 0}, "prior-block"), ({"prior_levels": 0}, "prior-levels"),
                         ({"refresh_budget": -1}, "refresh-budget"),
                         ({"is_equirectangular": True}, "is-equirectangular"),
                         ({"fisheye_crop_radius": 0.5}, "fisheye-crop-radius")):
        with pytest.raises(UserInputError, match=name):
            EvosPixelSamplerConfig(**kwargs).validate()


def test_a_resumed_run_schedules_key_iterations_over_its_real_last_step():
    """nerfstudio 1.1.5 trains max_num_iterations more steps after --load-dir: 40 + 10 here."""
    from types import SimpleNamespace

    from evos_nerf.nerfstudio.datamanager import EvosDataManager

    dm = SimpleNamespace(selector=SimpleNamespace(total_steps=1))
    trainer = SimpleNamespace(_start_step=40, config=SimpleNamespace(max_num_iterations=10))
    EvosDataManager.get_training_callbacks(dm, SimpleNamespace(trainer=trainer))
    assert dm.selector.total_steps == 50


def test_real_capture_method_anneals_toward_uniform_while_the_blender_method_keeps_selecting():
    from evos_nerf.nerfstudio.config import evos_nerf_blender_config, evos_nerf_config

    store = FitnessStore([(H, W)] * N, dtype=torch.float32)
    for config, first, last in ((evos_nerf_config(), 500, 950), (evos_nerf_blender_config(), 333, 333)):
        cfg = config.pipeline.datamanager.pixel_sampler
        selector = RaySelector(cfg, store, 32, torch.Generator().manual_seed(0), total_steps=100)
        # population size of 1000 pixels at the first step and in the last stage (t = 99 of 100)
        assert abs(sum(selector.counts(0, 1000)) - first) <= 1  # survivors + mutants
        assert abs(sum(selector.counts(98, 1000)) - last) <= 1


def test_both_methods_pool_the_top_quarter_and_the_blender_method_draws_fewer_mutants():
    """Synthetic scenes have no persistent error for a stale cache to chase, so evos-nerf-blender
    keeps the real-capture method's pool and spends a quarter of its batch on mutants, not half."""
    from evos_nerf.nerfstudio.config import evos_nerf_blender_config, evos_nerf_config

    store = FitnessStore([(H, W)] * N, dtype=torch.float32)
    for config, mutant_share in ((evos_nerf_config(), 0.5), (evos_nerf_blender_config(), 0.25)):
        cfg = config.pipeline.datamanager.pixel_sampler
        selector = RaySelector(cfg, store, 32, torch.Generator().manual_seed(0), total_steps=100)
        survivors, mutants = selector.counts(0, 1200)
        assert survivors == 300  # the top 25% of 1200 pixels
        assert mutants / (survivors + mutants) == pytest.approx(mutant_share, abs=1e-3)
