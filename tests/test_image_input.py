"""Images are read as image libraries define them (no silent rescaling or bit loss), or refused by name."""

import json
import struct
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from evos_nerf.errors import UserInputError
from evos_nerf.image.cli import main
from evos_nerf.image.signal import load_image

TINY = ["--resolution", "16", "--backbone.width", "8", "--iterations", "4", "--log-every", "2"]


def write_png(path, array, color_type):
    """A PNG with exactly these samples (Pillow cannot write 16-bit RGB): color type 0 gray, 2 RGB, 4 LA, 6 RGBA."""
    h, w = array.shape[:2]
    big_endian = array.astype(f">u{array.dtype.itemsize}")
    raw = b"".join(b"\x00" + big_endian[y].tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, array.dtype.itemsize * 8, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def fine_ramp(h=16, w=16, channels=3):
    """16-bit values that differ only below the top 8 bits: cut to 8 bits, they all collapse to one."""
    rng = np.random.default_rng(0)
    base = 40000 + np.arange(channels) * 3000  # R, G, B apart, so a channel swap shows too
    return (base + rng.integers(0, 256, (h, w, channels))).astype(np.uint16)


def test_16bit_rgb_png_keeps_16bit_precision(tmp_path):
    path = tmp_path / "deep.png"
    ramp = fine_ramp()
    write_png(path, ramp, color_type=2)
    signal = load_image(path)
    np.testing.assert_allclose(signal.rgb.numpy() * 65535.0, ramp, atol=0.02)
    assert "16-bit" in signal.note


def test_16bit_rgba_and_gray_alpha_pngs_keep_precision(tmp_path):
    ramp = fine_ramp(channels=3)
    opaque = np.full((16, 16, 1), 65535, np.uint16)
    write_png(tmp_path / "rgba.png", np.concatenate([ramp, opaque], -1), color_type=6)
    write_png(tmp_path / "la.png", np.concatenate([ramp[..., :1], opaque], -1), color_type=4)
    np.testing.assert_allclose(load_image(tmp_path / "rgba.png").rgb.numpy() * 65535.0, ramp, atol=0.02)
    gray = load_image(tmp_path / "la.png").rgb.numpy() * 65535.0
    np.testing.assert_allclose(gray, np.repeat(ramp[..., :1], 3, -1), atol=0.02)


def test_float_tiff_above_one_is_refused_naming_file_and_range(tmp_path):
    path = tmp_path / "radiance.tif"
    tifffile.imwrite(path, np.linspace(0, 200, 16 * 16 * 3, dtype=np.float32).reshape(16, 16, 3))
    with pytest.raises(UserInputError, match=r"radiance\.tif.*\[0, 200\].*outside \[0, 1\]"):
        load_image(path)


def test_float_tiff_in_unit_range_is_read_as_is(tmp_path):
    path = tmp_path / "unit.tif"
    data = np.random.default_rng(1).random((16, 16, 3), dtype=np.float32)
    tifffile.imwrite(path, data)
    signal = load_image(path)
    np.testing.assert_array_equal(signal.rgb.numpy(), data)
    assert "float32 values taken as-is" in signal.note


def test_single_channel_float_tiff_above_one_is_refused(tmp_path):
    # Pillow reads this one (mode F); it used to be divided by 255.
    path = tmp_path / "gray.tif"
    Image.fromarray(np.full((16, 16), 3.5, np.float32), mode="F").save(path)
    with pytest.raises(UserInputError, match=r"gray\.tif.*3\.5"):
        load_image(path)


def test_planar_16bit_tiff_is_read_channels_last(tmp_path):
    path = tmp_path / "planar.tif"
    ramp = fine_ramp()
    tifffile.imwrite(path, np.moveaxis(ramp, -1, 0), planarconfig="separate", photometric="rgb")
    np.testing.assert_allclose(load_image(path).rgb.numpy() * 65535.0, ramp, atol=0.02)


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.uint32])
def test_integer_types_without_a_defined_range_are_refused(tmp_path, dtype):
    path = tmp_path / "counts.tif"
    tifffile.imwrite(path, np.arange(256, dtype=dtype).reshape(16, 16))
    with pytest.raises(UserInputError, match=rf"counts\.tif.*unsupported pixel type {np.dtype(dtype).name}"):
        load_image(path)


def test_multi_page_tiff_is_refused(tmp_path):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.zeros((5, 16, 16), np.uint8))
    with pytest.raises(UserInputError, match=r"stack\.tif.*expected one 2-D image"):
        load_image(path)


def test_skimage_dataset_that_is_not_one_image_is_refused():
    with pytest.raises(UserInputError, match=r"skimage:stereo_motorcycle is not a single image"):
        load_image("skimage:stereo_motorcycle")


def test_skimage_helpers_are_not_taken_for_images():
    with pytest.raises(UserInputError, match="unknown skimage image 'download_all'"):
        load_image("skimage:download_all")


def test_16bit_png_fit_notes_the_conversion_in_metrics(tmp_path, capsys):
    path = tmp_path / "deep.png"
    write_png(path, fine_ramp(), color_type=2)
    out = tmp_path / "out"
    assert main(["fit", str(path), "--strategies", "full", "--out", str(out), *TINY]) == 0, capsys.readouterr()
    metrics = json.loads((out / "deep" / "full" / "metrics.json").read_text())
    assert "16-bit values scaled to [0, 1]" in metrics["input_note"]


def test_float_tiff_fit_stops_with_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "hdr.tiff"
    tifffile.imwrite(path, np.full((16, 16, 3), 7.0, np.float32))
    assert main(["fit", str(path), "--out", str(tmp_path / "out"), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:") and "hdr.tiff" in err and "[7, 7]" in err
    assert not (tmp_path / "out" / "hdr").exists()
