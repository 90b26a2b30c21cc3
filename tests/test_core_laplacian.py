"""The bordered-plane Laplacian that CFS uses on non-key iterations, against the convolution."""

import torch

from evos_nerf.core.laplacian import (
    bordered,
    bordered_index,
    gray_255,
    gray_255_rows,
    laplacian,
    laplacian_of_bordered,
)


def test_bordered_laplacian_equals_the_zero_padded_convolution_on_random_planes():
    g = torch.Generator().manual_seed(0)
    for h, w in [(1, 1), (2, 5), (7, 3), (31, 64)]:
        gray = torch.rand(h, w, generator=g) * 255.0
        expected = laplacian(gray)
        got = laplacian_of_bordered(bordered(gray))
        assert got.shape == (h, w)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-4)


def test_bordered_laplacian_of_a_point_reaches_only_its_four_neighbours():
    gray = torch.zeros(4, 4)
    gray[0, 0] = 1.0  # a corner: the zero border stands in for the missing neighbours
    lap = laplacian_of_bordered(bordered(gray))
    expected = torch.zeros(4, 4)
    expected[0, 0], expected[0, 1], expected[1, 0] = -4.0, 1.0, 1.0
    assert torch.equal(lap, expected)


def test_bordered_index_addresses_the_same_pixel_in_the_bordered_plane():
    h, w = 5, 7
    plane = torch.arange(h * w, dtype=torch.float32).view(h, w)
    indices = torch.tensor([0, 6, 7, 20, h * w - 1])
    assert torch.equal(bordered(plane).reshape(-1)[bordered_index(indices, w)], plane.reshape(-1)[indices])


def test_row_grayscale_is_the_image_grayscale_pixel_for_pixel():
    g = torch.Generator().manual_seed(1)
    rgb = torch.rand(6, 9, 3, generator=g) * 1.4 - 0.2  # some values outside [0, 1]: clamped alike
    assert torch.equal(gray_255_rows(rgb.reshape(-1, 3)), gray_255(rgb).reshape(-1))
