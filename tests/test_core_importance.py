"""The baseline importance samplers (instant-ngp's error map, Soft Mining) with known answers."""

import torch

from evos_nerf.core.importance import ErrorMap, SoftMining, mixture_weights
from evos_nerf.core.store import FitnessStore


def test_soft_mining_draws_pixels_in_proportion_to_error_with_a_uniform_floor():
    store = FitnessStore([(4, 4)], dtype=torch.float32)
    errors = torch.linspace(0.0, 1.0, 16) ** 2  # squared error: importance is its root
    sm = SoftMining(store, alpha=1.0, uniform=0.1, warmup=1)
    sm.rebuild(errors)
    target = 0.9 * errors.sqrt() / errors.sqrt().sum() + 0.1 / 16
    assert torch.allclose(sm.probability.float(), target, atol=1e-6)
    flat, _ = sm.draw(200_000, step=10, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(flat, minlength=16).float() / flat.numel()
    assert torch.allclose(freq, target, atol=0.004)
    assert freq[0] > 0  # the zero-error pixel is still drawn (uniform floor)


def test_soft_mining_weights_are_inverse_probabilities_so_the_loss_is_unbiased():
    store = FitnessStore([(4, 4)], dtype=torch.float32)
    errors = torch.rand(16, generator=torch.Generator().manual_seed(1))
    sm = SoftMining(store, alpha=1.0, uniform=0.1, warmup=1)
    sm.rebuild(errors)
    flat, weights = sm.draw(4096, step=10, generator=torch.Generator().manual_seed(2))
    inverse = (16 * sm.probability[flat]).pow(-1.0).float()
    cap = float(inverse.mean() + inverse.std())
    assert torch.allclose(weights, inverse.clamp(max=cap))  # the official code's clamp at mean + std
    # Below the cap, E_q[w * loss] = sum_i q_i * loss_i / (M q_i) = mean(loss): the full-batch loss.
    loss = torch.rand(16, generator=torch.Generator().manual_seed(3)).double()
    full = (sm.probability * (16 * sm.probability).pow(-1.0) * loss).sum()
    assert abs(float(full) - float(loss.mean())) < 1e-12
    assert abs(float((weights.double() * loss[flat]).mean()) - float(loss.mean())) < 0.05


def test_soft_mining_exponent_warms_up_and_stops_at_alpha():
    sm = SoftMining(FitnessStore([(2, 2)]), alpha=0.8, warmup=1000)
    assert sm.exponent(0) == 0.0 and sm.exponent(500) == 0.5 and sm.exponent(5000) == 0.8


def test_soft_mining_never_draws_masked_pixels():
    store = FitnessStore([(4, 4)], dtype=torch.float32)
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[:2] = False
    store.initialise([torch.rand(4, 4, 3)], masks=[mask])
    sm = SoftMining(store, alpha=1.0, uniform=0.5)
    sm.rebuild(torch.ones(16))
    flat, _ = sm.draw(5000, 10, torch.Generator().manual_seed(3))
    assert bool((flat >= 8).all())


def _feed(em: ErrorMap, store: FitnessStore, error_of, steps: int, gen) -> None:
    for _ in range(steps):
        flat = em.draw(em.batch_size, gen)
        em.observe(flat, error_of(flat))


def test_error_map_learns_where_the_error_is_and_samples_there():
    store = FitnessStore([(32, 32), (32, 32)], dtype=torch.float32)
    em = ErrorMap(store, batch_size=256, uniform=0.5, window=8)
    gen = torch.Generator().manual_seed(4)
    hard = torch.zeros(store.num_pixels, dtype=torch.bool)
    hard.view(2, 32, 32)[1, :16, :16] = True  # one quadrant of the second image
    error_of = lambda flat: torch.where(hard[flat], 1.0, 0.001)  # noqa: E731
    _feed(em, store, error_of, 8, gen)
    assert em.cell_cdf is not None  # the first window ended and built the CDFs
    assert float(em.image_pmf[1]) > 0.9  # images in proportion to error, 10% uniform floor
    flat = em.draw(20000, gen)
    in_hard = float(hard[flat].float().mean())
    # image 1 with ~0.95; then half uniform (1/4 of the quadrant) + half from the map (~all of it)
    assert 0.5 < in_hard < 0.65


def test_error_map_divides_by_sampling_density_so_a_flat_error_stays_flat():
    store = FitnessStore([(32, 32)], dtype=torch.float32)
    em = ErrorMap(store, batch_size=512, uniform=0.5, window=4)
    gen = torch.Generator().manual_seed(5)
    em.cell_pmf = torch.zeros(1, 8 * 8, dtype=torch.float64)  # a skewed map from a previous window
    em.cell_pmf[0, :8] = 1 / 8
    em.cell_cdf, em.image_pmf = torch.cumsum(em.cell_pmf, 1), torch.ones(1, dtype=torch.float64)
    em.image_cdf, em.built_res = torch.ones(1, dtype=torch.float64), 8
    em.window, em.steps_in_window = 40, 0
    em._start_window()
    _feed(em, store, lambda flat: torch.ones(flat.numel()), 39, gen)
    dense = em.errors[0, 1:4, 1:-1]  # the map's first row of cells: ~8x more samples than the rest
    sparse = em.errors[0, 8:-1, 1:-1]
    assert abs(float(dense.mean() / sparse.mean()) - 1.0) < 0.15  # without the division: ~8


def test_mixture_weights_sum_to_one_and_ignore_invalid_entries():
    valid = torch.tensor([True, True, False, True])
    w = mixture_weights(torch.tensor([1.0, 0.0, 5.0, 3.0]), 0.2, valid)
    assert abs(float(w.sum()) - 1.0) < 1e-12 and float(w[2]) == 0.0
    assert abs(float(w[1]) - 0.2 / 3) < 1e-12
