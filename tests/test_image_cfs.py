"""CFS from a bordered grayscale plane against the pseudo-full image the official code builds."""

import pytest
import torch

from evos_nerf.core import laplacian_of_rgb
from evos_nerf.image.cfs import CrossFrequencySupervision
from evos_nerf.image.signal import ImageSignal


def pseudo_full_cfs(signal: ImageSignal, cache: torch.Tensor, prediction: torch.Tensor, indices: torch.Tensor):
    """The reference: fresh predictions scattered into the last full one, Laplacian of the whole
    image, mean over the selected pixels (official trainer/img_sampling_trainer.py, the non-key
    branch of _sampler_compute_loss; this project's trainer before the bordered plane)."""
    h, w = signal.height, signal.width
    image = cache.index_put((indices,), prediction)
    lap = laplacian_of_rgb(signal.decode(image).reshape(h, w, 3))
    return ((lap - signal.target_laplacian()) ** 2).reshape(-1)[indices].mean()


def random_signal(h: int, w: int, g: torch.Generator) -> ImageSignal:
    rgb = torch.rand(h, w, 3, generator=g) * 0.8 + 0.1
    return ImageSignal("random", rgb, float(rgb.min()), float(rgb.max()))


@pytest.mark.parametrize("h,w,share", [(1, 9, 0.5), (8, 8, 0.25), (13, 21, 0.5), (64, 48, 0.9), (32, 32, 1.0)])
def test_selected_cfs_matches_the_pseudo_full_image_on_random_inputs(h, w, share):
    g = torch.Generator().manual_seed(h * 100 + w)
    signal = random_signal(h, w, g)
    n = h * w
    cache = torch.rand(n, 3, generator=g) * 2.4 - 1.2  # beyond [-1, 1]: the clamp is exercised
    indices = torch.randperm(n, generator=g)[: max(1, int(share * n))]
    fresh = torch.rand(indices.numel(), 3, generator=g) * 2.4 - 1.2

    cfs = CrossFrequencySupervision(signal)
    cfs.remember(cache)
    ascending = torch.argsort(indices)
    # the trainer sorts the indices; the result must not depend on the order
    for order, pred in ((indices, fresh), (indices[ascending], fresh[ascending])):
        p_ref = pred.clone().requires_grad_()
        p_new = pred.clone().requires_grad_()
        expected = pseudo_full_cfs(signal, cache, p_ref, order)
        got = cfs.selected_loss(p_new, order)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-3)
        expected.backward()
        got.backward()
        torch.testing.assert_close(p_new.grad, p_ref.grad, rtol=1e-4, atol=1e-6 * float(p_ref.grad.abs().max()))


def test_selected_cfs_reads_the_remembered_prediction_around_the_selected_pixels():
    g = torch.Generator().manual_seed(7)
    signal = random_signal(6, 6, g)
    cfs = CrossFrequencySupervision(signal)
    indices = torch.tensor([14])  # an interior pixel: its Laplacian reads four stale neighbours
    fresh = torch.zeros(1, 3)
    losses = []
    for cache in (torch.zeros(36, 3), torch.ones(36, 3) * 0.5):
        cfs.remember(cache)
        losses.append(float(cfs.selected_loss(fresh, indices)))
        assert losses[-1] == pytest.approx(float(pseudo_full_cfs(signal, cache, fresh, indices)), rel=1e-5)
    assert losses[0] != losses[1]


def test_full_cfs_is_the_laplacian_error_of_the_whole_prediction():
    g = torch.Generator().manual_seed(3)
    signal = random_signal(10, 12, g)
    pred = torch.rand(120, 3, generator=g) * 2 - 1
    cfs = CrossFrequencySupervision(signal)
    everything = torch.arange(120)
    torch.testing.assert_close(cfs.full_loss(pred), pseudo_full_cfs(signal, pred, pred, everything))
    assert not cfs.ready
