"""`make test` sets up everything on a fresh machine, its system packages included (the browser
test never skips, and `ns-export` needs libusb).

scripts/setup.sh runs here in a copy of the repository whose .venv is already installed (its stamp
matches pyproject.toml) and whose python only answers the libusb check, against stub `apt-get` /
`sudo` / `id` on a PATH without any browser: nothing is installed, the stubs record what would
have run.
"""

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOLS = ("dirname", "sha256sum", "cut", "cat")


def stub(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/bash\n" + body + "\n")
    path.chmod(0o755)
    return path


def installed_copy(tmp_path: Path, libusb: bool) -> Path:
    """The repository's setup script beside an installed .venv, with or without libusb-1.0."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "setup.sh", repo / "scripts" / "setup.sh")
    shutil.copy(REPO / "pyproject.toml", repo / "pyproject.toml")
    digest = hashlib.sha256((repo / "pyproject.toml").read_bytes()).hexdigest()
    (repo / ".venv" / ".evos-nerf-installed").write_text(digest + "\n")
    stub(repo / ".venv" / "bin", "python", "exit 0" if libusb else "exit 1")
    return repo


def run_setup(tmp_path: Path, uid: int, *args: str, apt: bool = True, libusb: bool = True,
              chromium: str = "", sudo: bool = True) -> subprocess.CompletedProcess:
    repo = installed_copy(tmp_path, libusb)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        os.symlink(shutil.which(tool), bin_dir / tool)
    log = tmp_path / "calls.log"
    stub(bin_dir, "id", f'[ "$1" = "-u" ] && echo {uid} || echo "uid={uid}"')
    if sudo:
        stub(bin_dir, "sudo", f'echo "sudo $*" >> {log}; "$@"')
    if apt:
        stub(bin_dir, "apt-get", f'echo "apt-get $*" >> {log}')
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), **({"CHROMIUM": chromium} if chromium else {})}
    return subprocess.run(["/bin/bash", str(repo / "scripts" / "setup.sh"), *args], env=env, cwd=repo,
                          capture_output=True, text=True, timeout=60)


def calls(tmp_path: Path):
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_make_test_installs_chromium_when_missing_as_root(tmp_path):
    out = run_setup(tmp_path, 0, "--system")
    assert out.returncode == 0, out.stderr
    assert calls(tmp_path) == ["apt-get update -q", "apt-get install -y -q --no-install-recommends chromium"]


def test_make_test_installs_chromium_through_sudo_when_not_root(tmp_path):
    out = run_setup(tmp_path, 1000, "--system")
    assert out.returncode == 0, out.stderr
    assert calls(tmp_path)[0] == "sudo apt-get update -q"
    assert "sudo apt-get install -y -q --no-install-recommends chromium" in calls(tmp_path)


def test_make_test_installs_libusb_for_ns_export_when_the_loader_cannot_find_it(tmp_path):
    out = run_setup(tmp_path, 0, "--system", libusb=False)
    assert out.returncode == 0, out.stderr
    assert calls(tmp_path) == ["apt-get update -q",
                               "apt-get install -y -q --no-install-recommends chromium libusb-1.0-0"]


def test_the_old_flag_name_still_installs_them(tmp_path):
    out = run_setup(tmp_path, 0, "--browser", libusb=False)
    assert out.returncode == 0, out.stderr
    assert calls(tmp_path)[-1] == "apt-get install -y -q --no-install-recommends chromium libusb-1.0-0"


def test_make_demo_installs_nothing_and_says_what_ns_export_lacks(tmp_path):
    out = run_setup(tmp_path, 0, libusb=False)  # make demo
    assert out.returncode == 0 and calls(tmp_path) == [], out.stderr
    assert "note: ns-export needs libusb-1.0" in out.stderr and "scripts/setup.sh --system" in out.stderr


def test_present_packages_are_not_reinstalled(tmp_path):
    chrome = stub(tmp_path, "my-chrome", "")
    out = run_setup(tmp_path, 0, "--system", chromium=str(chrome))
    assert out.returncode == 0 and calls(tmp_path) == [], out.stderr
    assert out.stderr == ""


def test_without_apt_get_it_stops_and_says_what_to_install(tmp_path):
    out = run_setup(tmp_path, 0, "--system", apt=False, libusb=False)
    assert out.returncode != 0
    assert "error: the tests need chromium libusb-1.0-0 and there is no apt-get here" in out.stderr
    assert "CHROMIUM=" in out.stderr


def test_without_root_or_sudo_it_stops_and_says_what_to_run_as_root(tmp_path):
    out = run_setup(tmp_path, 1000, "--system", sudo=False)
    assert out.returncode == 1 and calls(tmp_path) == []
    assert "there is no sudo here: run 'apt-get install chromium' as root" in out.stderr


def test_ci_runs_the_readme_test_command():
    assert (REPO / ".ci" / "run").read_text().strip().splitlines()[-1] == "make test"
    makefile = (REPO / "Makefile").read_text()
    assert "bash scripts/setup.sh --system" in makefile.split("\ntest:")[1]
