"""Up-front checks of a scene folder, so bad input fails with a message that names the problem
instead of a stack trace from deep inside a dataparser or a collate function."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from PIL import Image


def check_scene(dataparser, data: Optional[Path], splits: Sequence[str]) -> None:
    """Raise ValueError naming the missing file, empty split or unreadable image."""
    root = Path(data) if data is not None else Path(dataparser.data)
    if not root.exists():
        raise ValueError(f"scene not found: {root}")
    if isinstance(dataparser, BlenderDataParserConfig):
        for split in splits:
            _check_blender_split(root, split)
    elif isinstance(dataparser, NerfstudioDataParserConfig):
        transforms = root / "transforms.json" if root.is_dir() else root
        if not transforms.is_file():
            raise ValueError(
                f"no transforms.json in {root}. For blender-format scenes (transforms_train.json ...) "
                "use `ns-train evos-nerf-blender` or add the `blender-data` subcommand"
            )


def _check_blender_split(root: Path, split: str) -> None:
    path = root / f"transforms_{split}.json"
    if not path.is_file():
        raise ValueError(f"missing {path.name} in {root}: a blender scene needs transforms_{{train,val,test}}.json")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    frames = meta.get("frames") or []
    if not frames:
        raise ValueError(f"{path} has no frames: the {split} split is empty")
    size = None
    for frame in frames:
        image = root / (str(frame["file_path"]).replace("./", "") + ".png")  # as the blender parser builds it
        if not image.is_file():
            raise ValueError(f"{path.name} lists {frame['file_path']} but {image} does not exist")
        try:
            with Image.open(image) as img:
                this = img.size
        except OSError as err:
            raise ValueError(f"cannot read {image}: {err}") from None
        # nerfstudio's blender parser takes every camera's size from the first image.
        if size is not None and this != size:
            raise ValueError(
                f"{image} is {this[0]}x{this[1]} but the first {split} image is {size[0]}x{size[1]}; "
                "blender scenes need one resolution per split"
            )
        size = this
