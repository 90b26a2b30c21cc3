"""Up-front checks of a scene folder, so bad input fails with one line that names the problem
instead of a stack trace from deep inside a dataparser or a collate function, or, worse, a run
that trains to "success" on a NaN camera.

Both formats are checked the way their nerfstudio parsers read them: blender
(``transforms_{split}.json``, ``camera_angle_x``, ``file_path + ".png"``) and nerfstudio-data
(``transforms.json``, intrinsics globally or per frame, ``images_N/`` when downscaled). Every
frame needs a ``file_path`` and a finite ``transform_matrix`` with a non-singular rotation, and
its image must exist, decode, be in a mode the loader reads as colour (not a palette or 16-bit
image, which nerfstudio would read as raw bytes) and, for nerfstudio-data, be the size of its
camera. Intrinsics must be finite (focal lengths and sizes positive), a camera model known,
distortion coefficients finite, masks one-channel and the size of their image, split file lists
must name frames, the cameras must not all sit at one point (the parser's auto-scale divides by
their spread) and the train split must not be empty. Images are verified without decoding (PNG
chunk checksums, JPEG end marker) and fully decoded only when that quick check fails, so a valid
but unusual file still passes as long as the loader could read it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from nerfstudio.cameras.cameras import CAMERA_MODEL_TO_TYPE
from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import MAX_AUTO_RESOLUTION, NerfstudioDataParserConfig
from PIL import Image

from evos_nerf import distributed
from evos_nerf.errors import UserInputError

Frame = Dict[str, Any]


def check_scene(dataparser, data: Optional[Path], splits: Sequence[str]) -> None:
    """Raise UserInputError naming the missing file, bad frame, empty split or unreadable image."""
    root = Path(data) if data is not None else Path(dataparser.data)
    if not root.exists():
        raise UserInputError(f"scene not found: {root}")
    if isinstance(dataparser, BlenderDataParserConfig):
        for split in splits:
            num_frames = _check_blender_split(root, split)
            if split == "train":
                _check_world_size(num_frames)
    elif isinstance(dataparser, NerfstudioDataParserConfig):
        _check_nerfstudio_data(dataparser, root, splits)


# -- shared -------------------------------------------------------------------------------------
def _load_json(path: Path) -> Dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserInputError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(meta, dict):
        raise UserInputError(f"{path} must hold a JSON object with a 'frames' list")
    return meta


def _frames(meta: Dict[str, Any], path: Path, what: str) -> List[Frame]:
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise UserInputError(f"{path} has no frames: {what} is empty")
    return frames


def _frame_name(path: Path, index: int, frame: Any) -> str:
    name = frame.get("file_path") if isinstance(frame, dict) else None
    return f"{path.name} frame {index}" + (f" ({name})" if name is not None else "")


def _check_frame(path: Path, index: int, frame: Any) -> str:
    """The frame's file_path, after checking it has one and a finite 4x4 (or 3x4) transform_matrix."""
    where = _frame_name(path, index, frame)
    if not isinstance(frame, dict):
        raise UserInputError(f"{where} is not a JSON object with file_path and transform_matrix")
    file_path = frame.get("file_path")
    if not isinstance(file_path, str) or not file_path:
        raise UserInputError(f"{where} has no file_path: every frame names its image")
    matrix = frame.get("transform_matrix")
    if matrix is None:
        raise UserInputError(f"{where} has no transform_matrix (its camera-to-world pose)")
    rows = matrix if isinstance(matrix, list) else []
    if len(rows) not in (3, 4) or any(not isinstance(r, list) or len(r) != 4 for r in rows):
        raise UserInputError(f"{where}: transform_matrix must be a 4x4 (or 3x4) list of numbers")
    for row in rows:
        for value in row:
            if not _is_finite_number(value):
                raise UserInputError(
                    f"{where}: transform_matrix holds {value!r}; a camera pose must be finite numbers "
                    "(fix or remove this frame)"
                )
    if _independence([row[:3] for row in rows[:3]]) < 1e-6:
        raise UserInputError(
            f"{where}: transform_matrix's rotation is singular; a camera pose needs three independent axes "
            "(a zero or placeholder matrix? fix or remove this frame)"
        )
    return file_path


def _independence(axes: List[List[float]]) -> float:
    """|det| over the product of the column norms: 1 for any (scaled) rotation, 0 for dependent axes."""
    m = torch.tensor(axes, dtype=torch.float64)
    scale = float(m.norm(dim=0).prod())
    return float(torch.linalg.det(m).abs()) / scale if scale > 0 else 0.0


def _is_finite_number(value: Any) -> bool:
    # json.loads reads NaN, Infinity and -Infinity as floats.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


MASK_MODES = ("1", "L", "P", "I", "I;16", "F")
"""One-channel PIL modes, which nerfstudio's mask loader reads (nonzero = keep)."""
LOADER_MODES = ("RGB", "RGBA", "L")
"""PIL modes nerfstudio's loader reads correctly: it takes ``np.array(image, dtype=uint8)``, so a
palette image gives its indices, 16-bit data its low byte, and two-channel data fails an assert."""


def _image_size(image: Path, where: str, what: str = "image", modes: Sequence[str] = LOADER_MODES) -> Tuple[int, int]:
    """(width, height) of an image the loader will decode correctly; UserInputError otherwise."""
    if not image.is_file():
        raise UserInputError(f"{where}: {what} {image} does not exist")
    try:
        with Image.open(image) as img:
            size, kind, mode = img.size, img.format, img.mode
            img.verify()  # PNG: every chunk's checksum up to IEND, without decoding
        if kind == "JPEG" and not _has_jpeg_end(image):
            raise OSError("no JPEG end-of-image marker")
    except Exception as quick:  # noqa: BLE001 -- PIL raises OSError, SyntaxError, ValueError, ...
        try:
            with Image.open(image) as img:
                img.load()  # what the loader does: the strict check above may reject a usable file
                size, mode = img.size, img.mode
        except Exception as err:  # noqa: BLE001
            reason = str(err) or str(quick) or type(err).__name__
            raise UserInputError(
                f"{where}: cannot read {what} {image}: {reason} (truncated or corrupt: re-export it or remove the frame)"
            ) from None
    if mode not in modes:
        why = ("nerfstudio's loader would read its palette indices or the low byte of 16-bit data as colours"
               if what == "image" else "nerfstudio reads masks with one channel")
        raise UserInputError(f"{where}: {what} {image} has PIL mode {mode}: {why}; convert it to {' or '.join(modes)}")
    return size


def _has_jpeg_end(image: Path) -> bool:
    with open(image, "rb") as handle:
        handle.seek(0, 2)
        handle.seek(max(0, handle.tell() - 2))
        return handle.read(2) == b"\xff\xd9"


def _check_world_size(num_train_images: int) -> None:
    """Every rank of a distributed run holds whole images (evos_nerf.core.sharding)."""
    world = distributed.get_world_size()
    if num_train_images < world:
        raise UserInputError(
            f"{num_train_images} training image(s) cannot be sharded over {world} ranks: every rank needs at "
            f"least one image; start at most {num_train_images} process(es) (torchrun --nproc-per-node)"
        )


# -- blender ------------------------------------------------------------------------------------
def _check_blender_split(root: Path, split: str) -> int:
    path = root / f"transforms_{split}.json"
    if not path.is_file():
        raise UserInputError(f"missing {path.name} in {root}: a blender scene needs transforms_{{train,val,test}}.json")
    meta = _load_json(path)
    frames = _frames(meta, path, f"the {split} split")
    angle = meta.get("camera_angle_x")
    if angle is None:
        raise UserInputError(f"{path} has no camera_angle_x (the horizontal field of view in radians)")
    if not _is_finite_number(angle) or not 0 < angle < math.pi:
        raise UserInputError(f"{path}: camera_angle_x must be a field of view in radians in (0, pi), got {angle!r}")
    size = None
    for index, frame in enumerate(frames):
        file_path = _check_frame(path, index, frame)
        image = root / (file_path.replace("./", "") + ".png")  # as the blender parser builds it
        this = _image_size(image, _frame_name(path, index, frame))
        # nerfstudio's blender parser takes every camera's size from the first image.
        if size is not None and this != size:
            raise UserInputError(
                f"{image} is {this[0]}x{this[1]} but the first {split} image is {size[0]}x{size[1]}; "
                "blender scenes need one resolution per split"
            )
        size = this
    return len(frames)


# -- nerfstudio-data ----------------------------------------------------------------------------
_INTRINSICS = ("fl_x", "fl_y", "cx", "cy", "w", "h")


def _check_nerfstudio_data(parser: NerfstudioDataParserConfig, root: Path, splits: Sequence[str]) -> None:
    transforms = root / "transforms.json" if root.is_dir() else root
    if not transforms.is_file():
        raise UserInputError(
            f"no transforms.json in {root}. For blender-format scenes (transforms_train.json ...) "
            "use `ns-train evos-nerf-blender` or add the `blender-data` subcommand"
        )
    data_dir = transforms.parent
    meta = _load_json(transforms)
    frames = _frames(meta, transforms, "the capture")
    file_paths = [_check_frame(transforms, i, frame) for i, frame in enumerate(frames)]
    model = meta.get("camera_model")
    if model is not None and model not in CAMERA_MODEL_TO_TYPE:
        raise UserInputError(f"{transforms}: unknown camera_model {model!r} (nerfstudio knows {', '.join(CAMERA_MODEL_TO_TYPE)})")
    for index, frame in enumerate(frames):
        _check_intrinsics(meta, frame, _frame_name(transforms, index, frame))
    _check_camera_spread(parser, transforms, frames)
    factor = _downscale_factor(parser, data_dir, file_paths[0], _frame_name(transforms, 0, frames[0]))
    images = []
    for index, (frame, file_path) in enumerate(zip(frames, file_paths)):
        where = _frame_name(transforms, index, frame)
        image = _resolve(data_dir, file_path, factor, "images_")
        width, height = _image_size(image, where)
        expected = _camera_size(meta, frame, factor)
        if (width, height) != expected:
            scaled = f" (w, h / {factor}: {factor}x downscaled)" if factor > 1 else " (its w, h)"
            raise UserInputError(f"{where}: image {image} is {width}x{height} but its camera is {expected[0]}x{expected[1]}{scaled}")
        images.append(image)
        if "mask_path" in frame:
            mask = _resolve(data_dir, str(frame["mask_path"]), factor, "masks_")
            if _image_size(mask, where, "mask", MASK_MODES) != (width, height):
                raise UserInputError(f"{where}: mask {mask} is not the size of its image ({width}x{height})")
        if "depth_file_path" in frame:
            depth = _resolve(data_dir, str(frame["depth_file_path"]), factor, "depths_")
            if not depth.is_file():
                raise UserInputError(f"{where}: depth_file_path {depth} does not exist")
    _check_split_files(transforms, meta, data_dir, factor, images, splits)
    num_train = _nerfstudio_train_count(parser, meta, images)
    if num_train == 0:
        raise UserInputError(
            f"{transforms}: the train split is empty ({len(frames)} frame(s) under --pipeline.datamanager.dataparser.eval-mode "
            f"{parser.eval_mode}); add frames or choose another eval mode"
        )
    _check_world_size(num_train)


_DISTORTION = ("k1", "k2", "k3", "k4", "p1", "p2")


def _intrinsic(meta: Dict[str, Any], frame: Frame, key: str) -> Any:
    """The value the parser uses: the top level's when it has the key, else the frame's."""
    return meta[key] if key in meta else frame.get(key)


def _camera_size(meta: Dict[str, Any], frame: Frame, factor: int) -> Tuple[int, int]:
    """(width, height) of the parser's camera: int(w), scaled by 1 / factor in float32 and rounded down, as
    ``Cameras.rescale_output_resolution`` does; the loader keeps the image as it is."""
    size = torch.tensor([int(_intrinsic(meta, frame, "w")), int(_intrinsic(meta, frame, "h"))])
    width, height = (size * (1.0 / factor)).to(torch.int64).tolist()
    return width, height


def _check_intrinsics(meta: Dict[str, Any], frame: Frame, where: str) -> None:
    for key in _INTRINSICS:
        value = _intrinsic(meta, frame, key)
        if value is None:
            raise UserInputError(f"{where} has no {key}: give it in the frame or once at the top level")
        if not _is_finite_number(value):
            raise UserInputError(f"{where}: {key} must be a finite number, got {value!r}")
        if key in ("fl_x", "fl_y", "w", "h") and value <= 0:
            raise UserInputError(f"{where}: {key} must be > 0, got {value!r}")
    for key in _DISTORTION:
        value = _intrinsic(meta, frame, key)
        if value is not None and not _is_finite_number(value):
            raise UserInputError(f"{where}: distortion coefficient {key} must be a finite number, got {value!r}")
    params = _intrinsic(meta, frame, "distortion_params")
    if params is not None and (not isinstance(params, list) or not all(_is_finite_number(v) for v in params)):
        raise UserInputError(f"{where}: distortion_params must be a list of finite numbers, got {params!r}")


def _check_camera_spread(parser: NerfstudioDataParserConfig, transforms: Path, frames: List[Frame]) -> None:
    """The parser's auto-scale divides by the largest camera offset, which is 0 when every camera sits at one point."""
    if len(frames) == 1:
        raise UserInputError(f"{transforms} has one frame; a radiance field needs views from at least two places")
    if not parser.auto_scale_poses:
        return
    positions = {tuple(float(row[3]) for row in frame["transform_matrix"][:3]) for frame in frames}
    if len(positions) == 1:
        raise UserInputError(
            f"{transforms}: all {len(frames)} cameras sit at one position {positions.pop()}; a radiance field needs "
            "views from different places (a rotation-only capture?)"
        )


def _check_split_files(transforms: Path, meta: Dict[str, Any], data_dir: Path, factor: int, images: List[Path],
                       splits: Sequence[str]) -> None:
    """``{train,val,test}_filenames`` must name frames of the capture, and once one is given the parser needs
    a list for every split it loads (it stops with a traceback otherwise)."""
    known = set(images)
    given = [split for split in ("train", "val", "test") if f"{split}_filenames" in meta]
    missing = [split for split in splits if given and split not in given]
    if missing:
        raise UserInputError(
            f"{transforms} lists {', '.join(f'{g}_filenames' for g in given)} but no {missing[0]}_filenames, which this "
            "run loads: list train, val and test or none"
        )
    for split in ("train", "val", "test"):
        names = meta.get(f"{split}_filenames")
        if names is None:
            continue
        if not isinstance(names, list):
            raise UserInputError(f"{transforms}: {split}_filenames must be a list of image paths")
        for name in names:
            if _resolve(data_dir, str(name), factor, "images_") not in known:
                raise UserInputError(f"{transforms}: {split}_filenames names {name!r}, which is not a frame's file_path")


def _resolve(data_dir: Path, file_path: str, factor: int, prefix: str) -> Path:
    """The file the nerfstudio parser opens for a frame (``_get_fname``)."""
    path = Path(file_path)
    return data_dir / f"{prefix}{factor}" / path.name if factor > 1 else data_dir / path


def _downscale_factor(parser: NerfstudioDataParserConfig, data_dir: Path, first: str, where: str) -> int:
    """The parser's downscale factor: the flag, or the automatic choice from the first frame's image."""
    if parser.downscale_factor is not None:
        return int(parser.downscale_factor)
    width, height = _image_size(data_dir / first, where)
    factor = 1
    while max(width, height) / factor > MAX_AUTO_RESOLUTION and (data_dir / f"images_{factor * 2}" / Path(first).name).exists():
        factor *= 2
    return factor


def _nerfstudio_train_count(parser: NerfstudioDataParserConfig, meta: Dict[str, Any], images: List[Path]) -> int:
    """How many frames the parser will put in the train split."""
    from nerfstudio.data.utils import dataparsers_utils as splits

    if "train_filenames" in meta:
        return len(meta["train_filenames"])
    names = sorted(images)
    if parser.eval_mode == "fraction":
        train = splits.get_train_eval_split_fraction(names, parser.train_split_fraction)[0]
    elif parser.eval_mode == "interval":
        train = splits.get_train_eval_split_interval(names, parser.eval_interval)[0]
    elif parser.eval_mode == "filename":
        train = [n for n in names if "train" in n.name]
    else:
        train = names
    return len(train)
