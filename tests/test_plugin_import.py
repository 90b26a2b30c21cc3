"""Importing the plugin (nerfstudio does it for every ns-* command) changes no global state it does not own."""

import os
import subprocess
import sys


def test_importing_the_plugin_keeps_the_users_matplotlib_backend():
    code = (
        "import matplotlib\n"
        "import evos_nerf.nerfstudio.config, evos_nerf.heatmaps, evos_nerf.image.report, evos_nerf.image.maps\n"
        "print(matplotlib.get_backend())\n"
    )
    env = dict(os.environ, MPLBACKEND="svg", PYTHONWARNINGS="ignore")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "svg"
