"""The shared real captures and the paper's images, where ../shared/data exists (skipped cleanly otherwise)."""

import re

import pytest
from nerf_helpers import TINY_MODEL_FLAGS, ns

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("capture, train_images", [("fern", 17), ("fox", 58)])
def test_ns_train_evos_nerf_trains_a_real_capture_with_nerfactos_real_scene_behaviour(shared_data, tmp_path, capture, train_images):
    """Scene contraction, the camera optimizer and appearance embeddings stay on (nerfacto's defaults);
    every 8th frame is held out (LLFF convention); fox brings OpenCV distortion."""
    out = ns("ns-train", [
        "evos-nerf", "--data", str(shared_data / capture), "--output-dir", str(tmp_path / "out"),
        "--experiment-name", capture, "--timestamp", "run", "--max-num-iterations", "4", "--steps-per-save", "4",
        "--vis", "tensorboard", "--viewer.quit-on-train-completion", "True", *TINY_MODEL_FLAGS,
        "nerfstudio-data", "--downscale-factor", "2",
    ], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"EVOS fitness store: {train_images} images" in out.stdout
    config = (tmp_path / "out" / capture / "evos-nerf" / "run" / "config.yml").read_text()
    assert "mode: SO3xR3" in config and "disable_scene_contraction: false" in config
    assert "eval_mode: interval" in config
    assert "use_appearance_embedding: true" in config and re.search(r"appearance_embed_dim: [1-9]", config)


def test_div2k_images_of_the_paper_load_at_full_size(shared_data):
    from evos_nerf.image.signal import load_image

    images = sorted((shared_data / "div2k_evos").glob("*.png"))
    assert len(images) == 16
    signal = load_image(str(images[0]), resolution=512)
    assert signal.rgb.shape[:2] == (512, 512)
