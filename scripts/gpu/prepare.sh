#!/usr/bin/env bash
# Run HERE (a machine that reaches the package registries) before a device run. It fills two
# ignored folders that the device call carries, because nothing can be fetched there:
#   .whl/      Python 3.12 wheels of what the GPU machine lacks (scripts/gpu/wheels.txt)
#   .gpu-data/ the real captures fern and fox, copied from ../shared/data (the device gets only the repo)
# Then, with the device tool:  run(command="bash scripts/gpu/check.sh", carry=[".whl", ".gpu-data"],
# timeout_s=580). With the repo they stay under the tool's 64 MiB (wheels 23, captures 13, repo 15).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
SHARED=${SHARED:-../shared/data}

platforms=(--platform any --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for n in 5 17 24 27 28 31 34 35; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
rm -rf .whl && mkdir -p .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" \
  --implementation cp "${platforms[@]}" -d .whl -r scripts/gpu/wheels.txt

rm -rf .gpu-data && mkdir -p .gpu-data
for scene in fern fox; do
  if [ ! -f "$SHARED/$scene/transforms.json" ]; then
    echo "error: $SHARED/$scene/transforms.json not found (set SHARED=/path/to/shared/data)" >&2
    exit 1
  fi
  cp -r "$SHARED/$scene" .gpu-data/
done
# The package as it was before the per-step path stopped reading back from the GPU, so that
# check.sh times before and after on the same card (README, "The per-step path without host reads").
BEFORE=${BEFORE:-908f8ed}
mkdir -p .gpu-data/before && git archive "$BEFORE" evos_nerf | tar -x -C .gpu-data/before
du -sh .whl .gpu-data
# The device call carries the tracked and untracked-not-ignored files with these two folders, 64 MiB at most.
tree=$( (git ls-files -z; git ls-files -z -o --exclude-standard) | du -cb --files0-from=- | tail -n 1 | cut -f1)
carried=$(du -cb .whl .gpu-data | tail -n 1 | cut -f1)
total=$(( (tree + carried) / 1048576 ))
echo "the device call would carry ${total} MiB (working tree $((tree / 1048576)), wheels and captures $((carried / 1048576)); limit 64)"
if [ "$total" -ge 64 ]; then
  echo "error: over the device tool's 64 MiB: commit less under benchmarks/ or carry fewer wheels" >&2
  exit 1
fi
