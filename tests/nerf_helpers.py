"""Shared settings for nerfstudio tests: a reduced nerfacto that trains in seconds on 2 CPU cores."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

from PIL import Image

TINY_MODEL_FLAGS = [
    "--pipeline.datamanager.train-num-rays-per-batch", "128",
    "--pipeline.datamanager.eval-num-rays-per-batch", "128",
    "--pipeline.model.num-nerf-samples-per-ray", "16",
    "--pipeline.model.num-proposal-samples-per-ray", "24", "16",
    "--pipeline.model.log2-hashmap-size", "12",
    "--pipeline.model.max-res", "128",
    "--pipeline.model.hidden-dim", "32",
    "--pipeline.model.hidden-dim-color", "32",
    "--pipeline.model.eval-num-rays-per-chunk", "2048",
    "--pipeline.datamanager.pixel-sampler.init-interval", "10",
    "--pipeline.datamanager.pixel-sampler.end-interval", "5",
    "--pipeline.datamanager.pixel-sampler.refresh-budget", "256",
]


def ns(command: str, args: List[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run an ns-* console script from this venv in a subprocess."""
    exe = Path(sys.executable).parent / command
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def train_args(scene: Path, out: Path, steps: int, extra: List[str] = ()) -> List[str]:
    return [
        "evos-nerf-blender",
        "--data", str(scene),
        "--output-dir", str(out),
        "--experiment-name", "tiny",
        "--timestamp", "run",
        "--max-num-iterations", str(steps),
        "--steps-per-save", str(steps),
        "--vis", "tensorboard",
        "--viewer.quit-on-train-completion", "True",
        "--logging.steps-per-log", "10",
        *TINY_MODEL_FLAGS,
        *extra,
    ]


def as_nerfstudio_data(scene: Path, dest: Path) -> Path:
    """A blender scene re-described as one nerfstudio-data capture: transforms.json with intrinsics,
    its train and val frames in one list (10 frames for the usual 8 + 2 test scene)."""
    shutil.copytree(scene, dest)
    angle = json.loads((scene / "transforms_train.json").read_text())["camera_angle_x"]
    frames = []
    for split in ("train", "val"):
        for frame in json.loads((scene / f"transforms_{split}.json").read_text())["frames"]:
            frames.append({"file_path": frame["file_path"].replace("./", "") + ".png",
                           "transform_matrix": frame["transform_matrix"]})
    with Image.open(scene / "train" / "r_0.png") as img:
        w, h = img.size
    focal = 0.5 * w / math.tan(0.5 * angle)
    intrinsics = {"fl_x": focal, "fl_y": focal, "cx": w / 2, "cy": h / 2, "w": w, "h": h}
    (dest / "transforms.json").write_text(json.dumps({**intrinsics, "frames": frames}))
    return dest
