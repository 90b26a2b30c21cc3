"""Up-front checks of a scene folder, so bad input fails with one line that names the problem
instead of a stack trace from deep inside a dataparser or a collate function, or, worse, a run
that trains to "success" on a NaN camera.

Both formats are checked the way their nerfstudio parsers read them: blender
(``transforms_{split}.json``, ``camera_angle_x``, ``file_path + ".png"``) and nerfstudio-data
(``transforms.json``, intrinsics globally or per frame, ``images_N/`` when downscaled). Every
frame needs a ``file_path`` and a finite ``transform_matrix``, and its image must exist and
decode. Images are verified without decoding (PNG chunk checksums, JPEG end marker) and fully
decoded only when that quick check fails, so a valid but unusual file still passes as long as
the loader could read it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

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
        _check_nerfstudio_data(dataparser, root)


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
    return file_path


def _is_finite_number(value: Any) -> bool:
    # json.loads reads NaN, Infinity and -Infinity as floats.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _image_size(image: Path, where: str) -> Tuple[int, int]:
    """(width, height) of an image the loader will be able to decode; UserInputError otherwise."""
    if not image.is_file():
        raise UserInputError(f"{where}: image {image} does not exist")
    try:
        with Image.open(image) as img:
            size, kind = img.size, img.format
            img.verify()  # PNG: every chunk's checksum up to IEND, without decoding
        if kind == "JPEG" and not _has_jpeg_end(image):
            raise OSError("no JPEG end-of-image marker")
        return size
    except Exception as quick:  # noqa: BLE001 -- PIL raises OSError, SyntaxError, ValueError, ...
        try:
            with Image.open(image) as img:
                img.load()  # what the loader does: the strict check above may reject a usable file
                return img.size
        except Exception as err:  # noqa: BLE001
            reason = str(err) or str(quick) or type(err).__name__
            raise UserInputError(
                f"{where}: cannot read image {image}: {reason} (truncated or corrupt: re-export it or remove the frame)"
            ) from None


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


def _check_nerfstudio_data(parser: NerfstudioDataParserConfig, root: Path) -> None:
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
    for index, frame in enumerate(frames):
        for key in _INTRINSICS:
            value = frame.get(key, meta.get(key))
            if value is None:
                raise UserInputError(
                    f"{_frame_name(transforms, index, frame)} has no {key}: give it in the frame or once at the top level"
                )
            if not _is_finite_number(value):
                raise UserInputError(f"{_frame_name(transforms, index, frame)}: {key} must be a finite number, got {value!r}")
    factor = _downscale_factor(parser, data_dir, file_paths[0], _frame_name(transforms, 0, frames[0]))
    images = []
    for index, (frame, file_path) in enumerate(zip(frames, file_paths)):
        where = _frame_name(transforms, index, frame)
        image = _resolve(data_dir, file_path, factor, "images_")
        _image_size(image, where)
        images.append(image)
        for key, prefix in (("mask_path", "masks_"), ("depth_file_path", "depths_")):
            if key in frame and not _resolve(data_dir, str(frame[key]), factor, prefix).is_file():
                raise UserInputError(f"{where}: {key} {_resolve(data_dir, str(frame[key]), factor, prefix)} does not exist")
    if distributed.get_world_size() > 1:
        _check_world_size(_nerfstudio_train_count(parser, meta, images))


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
