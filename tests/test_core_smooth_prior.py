"""The smooth crossover prior: SSIM's sensitivity to squared error, and the parent it ranks by."""

import pytest
import torch

from evos_nerf.core.contrast import SSIM_C2, ssim_sensitivity
from evos_nerf.core.pool import rank_pixels
from evos_nerf.core.selector import RaySelector, SelectorConfig
from evos_nerf.core.store import FitnessStore
from evos_nerf.metrics import ssim

H = W = 32


def half_flat(seed: int = 0) -> torch.Tensor:
    """Left half flat grey, right half uniform noise (a texture of variance 0.0075)."""
    image = torch.full((H, W, 3), 0.5)
    image[:, W // 2 :] = 0.35 + 0.3 * torch.rand(H, W // 2, 3, generator=torch.Generator().manual_seed(seed))
    return image


def test_a_flat_image_is_as_sensitive_as_ssim_allows_and_uint8_agrees_with_float():
    flat = torch.full((20, 24, 3), 0.3)
    assert torch.allclose(ssim_sensitivity(flat), torch.full((20, 24), 1 / SSIM_C2))
    image = torch.randint(0, 256, (20, 24, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ssim_sensitivity(image), ssim_sensitivity(image.float() / 255), rtol=1e-4)
    # Thinner than SSIM's half-window: the whole image is the window (still finite, still one value per pixel).
    assert torch.allclose(ssim_sensitivity(torch.rand(1, 1, 3)), torch.full((1, 1), 1 / SSIM_C2))
    assert bool(torch.isfinite(ssim_sensitivity(torch.rand(4, 30, 3))).all())


def test_sensitivity_predicts_how_much_more_ssim_the_same_noise_costs_in_a_flat_region():
    image = torch.full((64, 64, 3), 0.5)
    image[:, 32:] = 0.35 + 0.3 * torch.rand(64, 32, 3, generator=torch.Generator().manual_seed(0))
    noise = 0.01 * torch.randn(16, 16, 3, generator=torch.Generator().manual_seed(1))

    def ssim_lost(y, x):
        noisy = image.clone()
        noisy[y : y + 16, x : x + 16] += noise  # the same noise, so the same squared error
        return 1 - ssim(noisy, image)

    measured = ssim_lost(24, 4) / ssim_lost(24, 40)
    sensitivity = ssim_sensitivity(image)
    predicted = float(sensitivity[24:40, 4:20].mean() / sensitivity[24:40, 40:56].mean())
    assert predicted > 10  # a flat region is an order of magnitude more sensitive
    assert measured == pytest.approx(predicted, rel=0.25)


def test_smooth_prior_has_mean_one_over_valid_pixels_and_shards_agree_on_its_scale():
    images = [half_flat(0), half_flat(1)]
    mask = torch.ones(H, W, dtype=torch.bool)
    mask[:4] = False
    whole = FitnessStore([(H, W)] * 2, dtype=torch.float32)
    whole.initialise(images, masks=[mask, None], smooth_prior=True)
    prior = torch.cat([whole.smooth(i) for i in range(2)])
    assert float(prior[whole.valid].mean()) == pytest.approx(1.0, rel=1e-5)
    parts = []
    for camera in (0, 1):  # what each rank contributes to the all-reduce
        FitnessStore([(H, W)], cameras=[camera], num_cameras=2).initialise(
            [images[camera]], masks=[[mask, None][camera]], reduce_sum=lambda t: parts.append(t) or t, smooth_prior=True)
    shard = FitnessStore([(H, W)], cameras=[1], num_cameras=2)
    shard.initialise([images[1]], reduce_sum=lambda t: parts[0] + parts[1], smooth_prior=True)
    assert shard.smooth_scale == pytest.approx(whole.smooth_scale)
    with pytest.raises(RuntimeError, match="smooth_prior"):
        FitnessStore([(H, W)]).smooth(0)  # never initialised with it: a clear error, not a silent edge prior


def test_smooth_crossover_gives_flat_regions_the_ssim_parent_s_share_of_the_pool():
    """Errors twice as high on the texture: plain error ranking takes only texture; the smooth
    parent ranks flat pixels first, and the adaptive balance p decides how many it contributes."""
    store = FitnessStore([(H, W)], dtype=torch.float32)
    store.initialise([half_flat()], smooth_prior=True)
    textured = torch.zeros(H, W, dtype=torch.bool)
    textured[:, W // 2 :] = True
    textured = textured.reshape(-1)
    store.update(torch.arange(H * W), torch.where(textured, 1.0, 0.5))
    k = 128
    plain, _ = rank_pixels(store, k, "topk", torch.Generator())
    assert bool(textured[plain].all())
    pool, p = rank_pixels(store, k, "evos", torch.Generator(), "select", stale_correction=False, crossover_prior="smooth")
    weight = store.smooth(0)
    e = torch.where(textured, 1.0, 0.5)
    assert p == pytest.approx(float(e.sum() / (e.sum() + (e * weight).sum())), rel=1e-5)
    assert 0.5 < p < 1  # most error (PSNR's parent) is on the texture; SSIM's is in the flat half
    assert int((~textured[pool]).sum()) == k - int(k * p)
    assert pool.numel() == k


def test_selector_builds_the_smooth_prior_only_when_its_crossover_uses_it():
    images = [half_flat(i) for i in range(2)]

    def selector(**kw):
        store = FitnessStore([(H, W)] * 2, dtype=torch.float32)
        sel = RaySelector(SelectorConfig(init_interval=5, end_interval=5, **kw), store, 64, torch.Generator().manual_seed(0), 40)
        sel.initialise(images)
        return sel

    assert selector(crossover="none", crossover_prior="smooth").store.smooth_scale is None  # no cost when unused
    sel = selector(crossover="select", crossover_prior="smooth")
    assert sel.store.smooth_scale is not None
    gen = torch.Generator().manual_seed(1)
    for step in range(12):
        sel.maybe_evolve(step)
        chosen = sel.select()
        sel.observe(chosen.flat, torch.rand(chosen.flat.numel(), generator=gen), step)
    assert sel.pool is not None and 0 < sel.balance < 1
