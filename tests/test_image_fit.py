import pytest
import torch

from evos_nerf.core import EvolutionConfig
from evos_nerf.errors import NonFiniteLossError
from evos_nerf.image.backbones import BackboneConfig
from evos_nerf.image.signal import load_image
from evos_nerf.image.trainer import ImageFitter
from evos_nerf.implementation import choose_implementation
from evos_nerf.metrics import build_lpips, psnr


@pytest.fixture(scope="module")
def small_image():
    return load_image("skimage:astronaut", resolution=48)


@pytest.mark.parametrize("strategy", ["evos", "full"])
def test_fitting_raises_psnr_well_above_the_start(small_image, strategy):
    fitter = ImageFitter(small_image, strategy, 300, EvolutionConfig(), BackboneConfig(width=48))
    start = psnr(fitter.reconstruct(), small_image.rgb)
    history = list(fitter.run(300, log_every=100))
    assert history[-1].step == 300
    assert history[-1].psnr > start + 8.0, (start, history[-1].psnr)


def test_every_strategy_trains_and_records_selection(small_image):
    for strategy in ("uniform", "evos-nocfs", "int", "int-dense", "expansive"):
        fitter = ImageFitter(small_image, strategy, 30, EvolutionConfig(), BackboneConfig(width=32))
        untrained = psnr(fitter.reconstruct(), small_image.rgb)  # ~10 dB: the bar to clear
        history = list(fitter.run(30, log_every=30))
        result = fitter.finish()
        assert history[-1].psnr > untrained + 0.5, (strategy, untrained, history[-1].psnr)
        assert result.selection_counts.shape == (48, 48)
        # r = 0.5: about half of all pixel-steps were trained
        assert 0.4 < float(result.selection_counts.sum()) / (30 * 48 * 48) < 0.6, strategy


def test_evos_trains_half_the_pixels_between_key_iterations(small_image):
    fitter = ImageFitter(small_image, "evos", 20, EvolutionConfig(), BackboneConfig(width=32))
    first = fitter.train_step()
    second = fitter.train_step()
    assert first.key and first.indices is None
    assert second.indices.numel() == small_image.num_samples // 2


def test_hashgrid_backbone_uses_nerfstudio_torch_path_on_cpu(small_image):
    fitter = ImageFitter(small_image, "evos", 40, EvolutionConfig(), BackboneConfig(kind="hashgrid", width=32))
    assert fitter.result.implementation == "torch"
    start = psnr(fitter.reconstruct(), small_image.rgb)
    assert list(fitter.run(40, 40))[-1].psnr > start + 3.0


def test_tcnn_is_chosen_only_on_cuda_when_importable(monkeypatch):
    import evos_nerf.implementation as impl

    monkeypatch.setattr(impl, "tcnn_available", lambda: True)
    assert choose_implementation("cuda", "auto") == "tcnn"
    assert choose_implementation("cpu", "auto") == "torch"
    monkeypatch.setattr(impl, "tcnn_available", lambda: False)
    assert choose_implementation("cuda", "auto") == "torch"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        choose_implementation("cpu", "tcnn")


def test_nan_loss_stops_with_a_named_step(small_image):
    fitter = ImageFitter(small_image, "evos", 10, EvolutionConfig(), BackboneConfig(width=16))
    with torch.no_grad():
        fitter.model.head.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="step 1"):
        fitter.train_step()


def test_lpips_is_unavailable_offline_instead_of_downloading():
    metric, reason = build_lpips()
    assert metric is None
    assert "LPIPS unavailable" in reason
