"""Cross-frequency supervision (EVOS §2.6) for image fitting, computed only where it is needed.

CFS adds lambda * mean((Lap(gray(pred)) - Lap(gray(gt)))^2). On a key iteration the prediction
covers the whole image. On other iterations (t <= cfs_until) the official code writes the fresh
predictions of the selected pixels into the last full prediction (a "pseudo-full" image), takes
the Laplacian of that whole image and averages it over the selected pixels.

Grayscale is computed per pixel and only the selected pixels' Laplacians enter the loss, so this
module keeps the grayscale of the last full prediction as one zero-bordered plane (computed once
per key iteration), writes the selected pixels' fresh grayscale into a copy of it, takes the
five-point stencil with four shifted adds and gathers it at the selected pixels. Per step that is
a few passes over N floats of one channel plus O(K) work, instead of [N, 3] copies, decoding and
grayscale of the whole image and a convolution with its backward: 2 instead of 15 ms per step at
256x256 on one CPU thread. Values equal the pseudo-full computation up to the order of the
stencil's float additions; gradients reach the same pixels.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from evos_nerf.core.laplacian import bordered, bordered_index, gray_255_rows, laplacian_of_bordered, laplacian_of_rgb
from evos_nerf.image.signal import ImageSignal


class CrossFrequencySupervision:
    """CFS loss of one image: the full form for key iterations, the gathered form for the others."""

    def __init__(self, signal: ImageSignal):
        self.signal = signal
        self.height, self.width = signal.height, signal.width
        self.target_laplacian = signal.target_laplacian()
        self._target_flat = self.target_laplacian.reshape(-1)
        self._plane: Optional[Tensor] = None
        """Bordered grayscale (0-255) of the last full prediction: the stale neighbours."""

    @property
    def ready(self) -> bool:
        """Whether a full prediction has been remembered (the selected form needs one)."""
        return self._plane is not None

    def remember(self, full_prediction: Tensor) -> None:
        """Keep the grayscale of a full [N, 3] prediction (encoded units) for the following steps."""
        gray = gray_255_rows(self.signal.decode(full_prediction.detach()))
        self._plane = bordered(gray.view(self.height, self.width))

    def full_loss(self, prediction: Tensor) -> Tensor:
        """Key iteration: Laplacian error of the full [N, 3] prediction, averaged over all pixels."""
        image = self.signal.decode(prediction).reshape(self.height, self.width, 3)
        return ((laplacian_of_rgb(image) - self.target_laplacian) ** 2).mean()

    def selected_loss(self, prediction: Tensor, indices: Tensor) -> Tensor:
        """Non-key iteration: the pseudo-full image's Laplacian error averaged over ``indices``.

        ``prediction`` is [K, 3] for the K distinct pixels ``indices``; the other pixels keep the
        remembered full prediction.
        """
        assert self._plane is not None, "selected_loss needs a remembered full prediction"
        fresh = gray_255_rows(self.signal.decode(prediction))
        plane = self._plane.reshape(-1).index_put((bordered_index(indices, self.width),), fresh)
        laplacian = laplacian_of_bordered(plane.view_as(self._plane)).reshape(-1)
        return ((laplacian[indices] - self._target_flat[indices]) ** 2).mean()
