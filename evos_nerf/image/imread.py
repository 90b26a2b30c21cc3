"""Read image files faithfully: every bit depth and float range as image libraries define them.

Pixel values follow scikit-image's and imageio's convention: 8-bit integers are v / 255, 16-bit
integers v / 65535, booleans 0 / 1, and float data is taken as-is in [0, 1]. Anything this cannot
represent without guessing (float data outside [0, 1], signed or 32-bit integers, multi-page
files) is refused with one line naming the file, so a fit never trains on a misread target.

Pillow reads most formats, but it silently cuts 16-bit RGB(A) PNGs to 8 bits and cannot open
float RGB TIFFs, so 16-bit PNGs go through OpenCV and TIFFs through tifffile (both installed
with nerfstudio and scikit-image). Every conversion is added to ``notes``, which ends up as
``input_note`` in metrics.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from evos_nerf.errors import UserInputError

SKIMAGE_PREFIX = "skimage:"
FLOAT_TOLERANCE = 1e-3
"""Float pixels this far outside [0, 1] are rounding noise and clipped (with a note); further is refused."""
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SKIMAGE_NOT_IMAGES = {"data_dir", "download_all", "file_hash", "lbp_frontal_face_cascade_filename"}
_PIL_CONVERT = {"P": "RGBA", "PA": "RGBA", "La": "LA", "RGBa": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}


def _png_bit_depth(path: Path) -> int:
    """Bit depth from the PNG header (0 if ``path`` is not a PNG): Pillow's mode hides it."""
    with open(path, "rb") as handle:
        head = handle.read(26)
    if len(head) < 26 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return 0
    return head[24]


def _read_pil(path: Path, notes: List[str]) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()  # decode everything now, so truncation is caught here and names the file
            if img.mode in _PIL_CONVERT:
                notes.append(f"{img.mode} image converted to {_PIL_CONVERT[img.mode]}")
                img = img.convert(_PIL_CONVERT[img.mode])
            return np.asarray(img)
    except UnidentifiedImageError:
        raise UserInputError(f"cannot read {path}: not an image file or an unsupported format") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise UserInputError(f"cannot read {path}: corrupt or truncated image ({err})") from None


def _read_png16(path: Path) -> np.ndarray:
    """16-bit PNG at full precision (OpenCV keeps uint16; Pillow would keep only the high byte)."""
    import cv2

    data = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if data is None or data.dtype != np.uint16:
        raise UserInputError(f"cannot read {path} at 16 bits per channel; save it as 8-bit or as a 16-bit TIFF")
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        data = np.concatenate([data[..., 2::-1], data[..., 3:]], axis=-1)  # OpenCV's BGR(A) -> RGB(A)
    return data


def _read_tiff(path: Path, notes: List[str]) -> np.ndarray:
    """A single-image TIFF with its own dtype (float, 16-bit), channels last."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            array, axes = series.asarray(), series.axes
            num_series = len(tif.series)
    except Exception as err:  # noqa: BLE001 - tifffile raises many types; Pillow may still manage
        return _read_tiff_with_pil(path, notes, err)
    while len(axes) > 2 and array.shape[0] == 1 and axes[0] not in "YX":
        array, axes = array[0], axes[1:]
    if num_series > 1 or axes not in ("YX", "YXS", "YXC", "SYX", "CYX"):
        raise UserInputError(
            f"{path}: TIFF holds {num_series} series, the first with axes {axes} and shape {array.shape}; "
            "expected one 2-D image (gray, RGB or RGBA)"
        )
    if axes in ("SYX", "CYX"):
        array = np.moveaxis(array, 0, -1)  # planar storage: channels first on disk
    return array


def _read_tiff_with_pil(path: Path, notes: List[str], tifffile_error: Exception) -> np.ndarray:
    """Fallback for TIFF compressions tifffile cannot decode without imagecodecs."""
    try:
        with Image.open(path) as img:
            mode, bits = img.mode, img.tag_v2.get(258, (8,))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise UserInputError(f"cannot read {path}: corrupt or unsupported TIFF ({tifffile_error})") from None
    bits = max(bits) if isinstance(bits, tuple) else int(bits)
    if bits > 8 and mode in ("RGB", "RGBA"):
        raise UserInputError(
            f"cannot read {path} faithfully: tifffile cannot decode it ({tifffile_error}) "
            f"and Pillow would cut its {bits}-bit {mode} to 8 bits"
        )
    return _read_pil(path, notes)


def read_file(path: Path, notes: List[str]) -> np.ndarray:
    """The pixels of an image file in their stored dtype; conversions done while reading go to ``notes``."""
    if not path.exists():
        raise UserInputError(f"image not found: {path}")
    if path.is_dir():
        raise UserInputError(f"expected an image file, got a directory: {path}")
    if path.suffix.lower() in (".tif", ".tiff"):
        return _read_tiff(path, notes)
    array = _read_pil(path, notes)  # validates (and fully decodes) every format, 16-bit PNGs included
    if _png_bit_depth(path) == 16:
        return _read_png16(path)
    return array


def read_skimage(source: str) -> Tuple[np.ndarray, str]:
    """``skimage:NAME``: one of scikit-image's bundled sample images; returns (pixels, NAME)."""
    import skimage.data

    name = source[len(SKIMAGE_PREFIX) :]
    loader = getattr(skimage.data, name, None)
    if name.startswith("_") or name in _SKIMAGE_NOT_IMAGES or loader is None or not callable(loader):
        raise UserInputError(f"unknown skimage image {name!r} (try skimage:astronaut)")
    try:
        data = loader()
    except Exception as err:  # noqa: BLE001 - optional downloads (pooch) fail in many ways
        raise UserInputError(f"skimage:{name} could not be loaded ({type(err).__name__}: {err})") from None
    if not isinstance(data, np.ndarray):
        raise UserInputError(
            f"skimage:{name} is not a single image (it returns a {type(data).__name__}); try skimage:astronaut"
        )
    return data, name


def to_unit_rgb(label: str, array: np.ndarray, notes: List[str]) -> np.ndarray:
    """Pixels of any supported dtype and channel count -> float32 [H, W, 3] in [0, 1]."""
    if array.ndim == 3 and array.shape[-1] > 4 and array.shape[0] <= 4:
        raise UserInputError(f"{label}: channels-first array of shape {array.shape}; expected channels last")
    if not (array.ndim == 2 or (array.ndim == 3 and 1 <= array.shape[-1] <= 4)):
        raise UserInputError(f"{label}: expected a 2-D image with 1-4 channels, got an array of shape {array.shape}")
    data = _to_unit_range(label, array.astype(array.dtype.newbyteorder("="), copy=False), notes)
    if data.ndim == 2 or data.shape[-1] == 1:
        data = np.repeat(data.reshape(*data.shape[:2], 1), 3, axis=-1)
        notes.append("grayscale expanded to RGB")
    elif data.shape[-1] == 2:
        gray, alpha = data[..., :1], data[..., 1:]
        data = np.repeat(gray * alpha + (1.0 - alpha), 3, axis=-1)
        notes.append("gray+alpha composited on white")
    elif data.shape[-1] == 4:
        rgb, alpha = data[..., :3], data[..., 3:]
        data = rgb * alpha + (1.0 - alpha)
        notes.append("RGBA composited on white")
    return np.ascontiguousarray(data, dtype=np.float32)


def _to_unit_range(label: str, array: np.ndarray, notes: List[str]) -> np.ndarray:
    """Stored values -> [0, 1] floats, the way scikit-image's img_as_float defines each dtype."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        notes.append("16-bit values scaled to [0, 1] (v / 65535)")
        return array.astype(np.float32) / 65535.0
    if array.dtype == bool:
        notes.append("1-bit values read as 0 / 1")
        return array.astype(np.float32)
    if array.dtype.kind == "f":
        data = array.astype(np.float32)
        if not np.isfinite(data).all():
            raise UserInputError(f"{label}: image contains NaN or infinite values")
        lo, hi = float(data.min()), float(data.max())
        if lo < -FLOAT_TOLERANCE or hi > 1.0 + FLOAT_TOLERANCE:
            raise UserInputError(
                f"{label}: float pixels span [{lo:.6g}, {hi:.6g}], outside [0, 1]; float images are read as-is "
                "(as scikit-image and imageio read them), so rescale it to [0, 1] or save it as 8- or 16-bit integers"
            )
        notes.append(f"{array.dtype} values taken as-is in [0, 1]")
        if lo < 0.0 or hi > 1.0:
            notes.append(f"float values in [{lo:.6g}, {hi:.6g}] clipped to [0, 1]")
            data = np.clip(data, 0.0, 1.0)
        return data
    raise UserInputError(
        f"{label}: unsupported pixel type {array.dtype}; expected 8- or 16-bit unsigned integers, "
        "booleans, or floats in [0, 1]"
    )
