#!/usr/bin/env bash
# Create .venv and install the project with its test extras. Re-running is cheap: it reinstalls
# only when pyproject.toml changed since the last successful install.
#
#   scripts/setup.sh            what `make demo` needs
#   scripts/setup.sh --system   also the system packages the tests need (`make test`), each with
#                               apt-get when missing, through sudo when not root: headless Chromium,
#                               which the viewer's browser test drives (CHROMIUM=/path/to/chrome uses
#                               another browser), and libusb-1.0, without which open3d, and so every
#                               `ns-export` command, fails to import. `--browser` is its old name.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
system=0
for arg in "$@"; do
  case "$arg" in
    --system|--browser) system=1 ;;
    *) echo "usage: scripts/setup.sh [--system]" >&2; exit 2 ;;
  esac
done

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.evos-nerf-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # PyPI's torch 2.14.1 for Linux is a CUDA build: the installed .venv takes about 8 GiB. Say so
  # up front, rather than leave pip's "No space left on device" halfway through the install.
  free_kib=$(df -Pk . | awk 'NR == 2 {print $4}')
  if [ "${free_kib:-0}" -lt $((9 * 1024 * 1024)) ]; then
    echo "warning: $((free_kib / 1024)) MiB free on the disk of $(pwd); the install into .venv needs about 9 GiB" >&2
  fi
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  .venv/bin/python -m pip check
  echo "$want" > "$stamp"
fi

# The same names tests/browser.py looks for.
have_browser() {
  if [ -n "${CHROMIUM:-}" ]; then
    [ -x "$CHROMIUM" ] || command -v "$CHROMIUM" >/dev/null 2>&1
    return
  fi
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
    || command -v google-chrome >/dev/null 2>&1
}

# open3d's wheel links libusb-1.0 and nerfstudio's exporter imports open3d at load, so without it
# `ns-export` stops at "libusb-1.0.so.0: cannot open shared object file". Asked of the loader itself.
have_libusb() {
  .venv/bin/python -c "import ctypes; ctypes.CDLL('libusb-1.0.so.0')" >/dev/null 2>&1
}

missing=()
if [ "$system" = 1 ]; then
  have_browser || missing+=(chromium)
  have_libusb || missing+=(libusb-1.0-0)
elif ! have_libusb; then
  echo "note: ns-export needs libusb-1.0 (open3d links it): install Debian's libusb-1.0-0," \
       "or run scripts/setup.sh --system" >&2
fi
if [ "${#missing[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: the tests need ${missing[*]} and there is no apt-get here to install them:" \
         "install them, or for Chromium set CHROMIUM=/path/to/chrome" >&2
    exit 1
  fi
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "error: the tests need ${missing[*]}; installing them takes root, and there is no sudo here:" \
           "run 'apt-get install ${missing[*]}' as root" >&2
      exit 1
    fi
    SUDO="sudo"
  fi
  echo "installing ${missing[*]} (Debian packages) for the viewer's browser test and ns-export"
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
