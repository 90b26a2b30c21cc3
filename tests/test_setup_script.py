"""`make test` sets up everything on a fresh machine, Chromium included (the browser test never skips).

scripts/setup.sh runs here against stub `apt-get` / `sudo` / `id` on a PATH without any browser,
so nothing is installed; the stubs record what would have run.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLS = ("dirname", "sha256sum", "cut", "cat")


def stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/bash\n" + body + "\n")
    path.chmod(0o755)


def run_setup(tmp_path: Path, uid: int, *args: str, apt: bool = True) -> subprocess.CompletedProcess:
    if not (REPO / ".venv" / ".evos-nerf-installed").is_file():
        pytest.skip("needs the set-up .venv (the script reinstalls otherwise)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        os.symlink(shutil.which(tool), bin_dir / tool)
    log = tmp_path / "calls.log"
    stub(bin_dir, "id", f'[ "$1" = "-u" ] && echo {uid} || echo "uid={uid}"')
    stub(bin_dir, "sudo", f'echo "sudo $*" >> {log}; "$@"')
    if apt:
        stub(bin_dir, "apt-get", f'echo "apt-get $*" >> {log}')
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    return subprocess.run(["/bin/bash", str(REPO / "scripts" / "setup.sh"), *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def calls(tmp_path: Path):
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_make_test_installs_chromium_when_missing_as_root(tmp_path):
    out = run_setup(tmp_path, 0, "--browser")
    assert out.returncode == 0, out.stderr
    assert calls(tmp_path) == ["apt-get update -q", "apt-get install -y -q --no-install-recommends chromium"]


def test_make_test_installs_chromium_through_sudo_when_not_root(tmp_path):
    out = run_setup(tmp_path, 1000, "--browser")
    assert out.returncode == 0, out.stderr
    assert calls(tmp_path)[0] == "sudo apt-get update -q"
    assert "sudo apt-get install -y -q --no-install-recommends chromium" in calls(tmp_path)


def test_a_present_browser_is_not_reinstalled_and_make_demo_installs_none(tmp_path):
    out = run_setup(tmp_path, 0)  # make demo
    assert out.returncode == 0 and calls(tmp_path) == []
    chrome = tmp_path / "my-chrome"
    stub(tmp_path, "my-chrome", "")
    out = subprocess.run(["/bin/bash", "-c", f"CHROMIUM={chrome} PATH={tmp_path / 'bin'} /bin/bash {REPO}/scripts/setup.sh --browser"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and calls(tmp_path) == [], out.stderr


def test_without_apt_get_it_stops_and_says_what_to_install(tmp_path):
    out = run_setup(tmp_path, 0, "--browser", apt=False)
    assert out.returncode != 0
    assert "error: the viewer's browser test needs Chromium" in out.stderr and "CHROMIUM=" in out.stderr


def test_ci_runs_the_readme_test_command():
    assert (REPO / ".ci" / "run").read_text().strip().splitlines()[-1] == "make test"
    makefile = (REPO / "Makefile").read_text()
    assert "bash scripts/setup.sh --browser" in makefile.split("\ntest:")[1]
