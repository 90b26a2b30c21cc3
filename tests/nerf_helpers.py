"""Shared settings for nerfstudio tests: a reduced nerfacto that trains in seconds on 2 CPU cores."""

import os
import subprocess
import sys
from pathlib import Path
from typing import List

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
