"""The prepared GPU check (scripts/gpu/) must not waste a lease on a missing package: nothing can be
fetched on the lent machine, so every distribution the entry points import has to be either there
already or among the carried wheels."""

import subprocess
import sys
from pathlib import Path

from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "scripts" / "gpu"

IMPORTED_DISTRIBUTIONS = """
import importlib.metadata as md, sys
import nerfstudio.scripts.train, nerfstudio.scripts.eval
import evos_nerf.nerfstudio.config, evos_nerf.implementation
sys.path.insert(0, "scripts"); import bench_nerf
tops = {name.split(".")[0] for name in sys.modules}
owners = md.packages_distributions()
print("\\n".join(sorted({dist for top in tops for dist in owners.get(top, [])})))
"""


def names(path: Path) -> set:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {canonicalize_name(line.split("==")[0]) for line in lines if line}


def test_every_package_the_gpu_check_imports_is_on_the_machine_or_carried():
    out = subprocess.run([sys.executable, "-c", IMPORTED_DISTRIBUTIONS], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    imported = {canonicalize_name(name) for name in out.split()}
    available = names(GPU / "device_packages.txt") | names(GPU / "wheels.txt") | {"evos-nerf"}
    missing = sorted(imported - available)
    assert not missing, f"imported but neither on the GPU machine nor in scripts/gpu/wheels.txt: {missing}"


def test_the_gpu_scripts_parse():
    for script in ("prepare.sh", "check.sh"):
        subprocess.run(["bash", "-n", str(GPU / script)], check=True)
