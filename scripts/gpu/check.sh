#!/usr/bin/env bash
# The device checks, as one prepared run ON the lent GPU machine (never in CI, never needed to
# build or test the project). Prepare here first with scripts/gpu/prepare.sh, then call the
# device tool with:
#   command: bash scripts/gpu/check.sh      carry: [".whl", ".gpu-data"]      timeout_s: 580
# It checks, in this order (cheapest and most basic first, so a short lease still learns them):
#   1. the install: nerfstudio 1.1.5 and this package beside the machine's own CUDA torch;
#   2. which device and hash-grid implementation `auto` picks there (tiny-cuda-nn or torch);
#   3. `ns-train evos-nerf` with no flags but a step cap on a real capture (fox), then `ns-eval`:
#      the CUDA device pick, mixed precision and checkpointing that CPU tests only mock;
#   3b. the fitness store's per-step select + observe on the GPU and on its host, without a model,
#      then 30 more steps under torch.profiler (scripts/bench_store.py, half a minute each): on
#      2026-12-04 a CUDA store took 2.9 ms a step against 1.9 ms on the host, so the op table says
#      which launches and host reads to cut; then the CUDA store again with the package before the
#      per-step path stopped reading back (908f8ed, from prepare.sh): before and after on one card;
#      then the error map's and Soft Mining's CUDA stores (BASELINE_STORES) when 300 s are left;
#   4. the GPU benchmark preset (`--preset real_gpu`: full nerfacto, full-size images, 4096 rays),
#      uniform against evos:step in lock-step on each scene:seed[:stream] of BENCH_RUNS, BENCH_STEPS steps each (1200: fox
#      plateaus there; at 2000 fox got no time on 2026-12-04),
#      as long as the time left allows: timings and the sampler's overhead on a GPU (the benchmark's
#      sampler timers wait for the GPU before and after each call: RaySelector.exact_timers).
# Everything lands in $OUT (the tool returns at most 8 files): summary.txt, logs.tgz and each
# benchmark part's .md and .json. Not checked: NCCL. The machine has one GPU, NCCL refuses two ranks
# on one device, and on one rank EVOS's collectives are no-ops (evos_nerf/distributed.py), so a
# one-GPU torchrun would only repeat step 3.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/evos-gpu-out}
NS_STEPS=${NS_STEPS:-300}
BENCH_STEPS=${BENCH_STEPS:-1200}
BENCH_EVALS=${BENCH_EVALS:-5}
# scene:seed or scene:seed:stream, in order. Run so far (benchmarks/gpu/): fern 0 (2000 steps), 1, 2
# and fox 0, 1 on the default selection stream, where seed 1 lost on both scenes; fox 1 on stream
# 1001 (an H100, 2026-12-05), where EVOS won (0.58x of the steps), so fox's seed-1 loss was the
# stream's draw. Fern 1 on stream 1001 was cut off at step 720: the H100 took 301 s for fox where
# the H200 took 240, so one scene is what a lease surely fits; a second runs only if time is left.
BENCH_RUNS=${BENCH_RUNS:-fern:1:1001 fox:2}
DEADLINE=${DEADLINE:-560}   # seconds after start by which everything must have stopped
BASELINE_STORES=${BASELINE_STORES:-errormap softmining}   # "" leaves the baselines' store timings out
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
mkdir -p "$OUT"
LOGS=$(mktemp -d)
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

say() { echo "[$SECONDS s] $*" | tee -a "$SUMMARY"; }
# step NAME LIMIT CMD...: run CMD under a time limit, log to $LOGS/NAME.log, keep its tail.
step() {
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1
  rc=$?
  say "$name: rc $rc after $((SECONDS - start)) s (limit $limit s)"
  grep -v -e '^\s*$' "$LOGS/$name.log" | tail -n 8 | sed 's/^/    /' | tee -a "$SUMMARY"
  return $rc
}
left() { echo $((DEADLINE - SECONDS)); }
finish() {
  (cd "$LOGS" && find . \( -name '*.log' -o -name '*.json' -o -name '*.md' -o -name '*.png' -o -name '*_profile.txt' -o -name 'config.yml' \) \
     -size -4M -print0 | tar -czf "$OUT/logs.tgz" --null -T -) 2>/dev/null
  say "done; logs in logs.tgz"
}
trap finish EXIT

# 1. Install: carried wheels, then this package (its entry points register the methods).
if [ ! -d .whl ] || [ ! -d .gpu-data ]; then
  say "error: .whl/ or .gpu-data/ missing: run scripts/gpu/prepare.sh here and carry both"
  exit 1
fi
step install 120 bash -c 'python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --upgrade --target /tmp/site .' || exit 1
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}

# Console scripts by module, so they run on this interpreter whatever pip wrote in their shebangs.
NS_TRAIN='import sys; sys.argv[0] = "ns-train"; from nerfstudio.scripts.train import entrypoint; entrypoint()'
NS_EVAL='import sys; sys.argv[0] = "ns-eval"; from nerfstudio.scripts.eval import entrypoint; entrypoint()'

# 2. What `auto` picks here.
step environment 60 python3 - <<'EOF'
import torch, nerfstudio, numpy
from importlib.metadata import version
from evos_nerf.implementation import choose_implementation, tcnn_available
print("torch", torch.__version__, "cuda", torch.version.cuda, "nccl", torch.cuda.nccl.version(),
      "numpy", numpy.__version__, "nerfstudio", version("nerfstudio"))
if not torch.cuda.is_available():
    raise SystemExit("torch sees no CUDA device: the checks below run on the CPU and measure nothing of a GPU")
print("device", torch.cuda.get_device_name(0), "| tinycudann importable:", tcnn_available(),
      "| auto picks:", choose_implementation("cuda"))
EOF

# 3. The user's command on CUDA with no device flags, then ns-eval of what it saved (NS_STEPS=0 skips it).
if [ "$NS_STEPS" -gt 0 ] && step ns_train 150 python3 -c "$NS_TRAIN" evos-nerf --data .gpu-data/fox --max-num-iterations "$NS_STEPS" \
     --vis tensorboard --output-dir "$LOGS/ns" --timestamp gpu; then
  config=$(find "$LOGS/ns" -name config.yml | head -n 1)
  grep -E "device_type|mixed_precision|implementation" "$config" | sed 's/^/    config: /' | tee -a "$SUMMARY"
  step ns_eval 90 python3 -c "$NS_EVAL" --load-config "$config" --output-path "$LOGS/ns/eval.json" \
    && python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['results']; print('    eval:', {k: round(v, 4) for k, v in r.items() if k in ('psnr', 'ssim', 'lpips', 'fps')})" \
    "$LOGS/ns/eval.json" 2>&1 | tee -a "$SUMMARY"
fi

# 3b. The sampler's own per-step cost (select + observe, 4096 rays, 10^7 pixels) with no model queued
# ahead of it, on a CUDA store and on a host store, then a profile of 30 steps: which launches and
# host reads make up the CUDA store's per-step time (README, "Fitness store at scale").
for device in cuda cpu; do
  step "store_$device" 60 python3 scripts/bench_store.py --device "$device" --sizes 1e7 --steps 200 --profile 30 \
    --out "$LOGS/store" && grep '^| 1.00e+07' "$LOGS/store/store_$device.md" | sed "s/^/    $device: /" | tee -a "$SUMMARY"
done
if [ -d .gpu-data/before/evos_nerf ]; then
  step store_cuda_before 60 env PYTHONPATH="$PWD/.gpu-data/before:$PYTHONPATH" python3 scripts/bench_store.py --device cuda \
    --sizes 1e7 --steps 200 --out "$LOGS/store_before" \
    && grep '^| 1.00e+07' "$LOGS/store_before/store_cuda.md" | sed "s/^/    cuda, before: /" | tee -a "$SUMMARY"
fi
# The baselines' CUDA stores (since 2026-12-06 their per-step draws and splats read less back), so the
# GPU timings of the comparison charge each sampler only its own work; skipped on a short lease.
for strategy in $BASELINE_STORES; do
  if [ "$(left)" -lt 300 ]; then say "store_cuda_$strategy: skipped, $(left) s left"; continue; fi
  step "store_cuda_$strategy" 45 python3 scripts/bench_store.py --device cuda --sizes 1e7 --steps 100 --strategy "$strategy" \
    --out "$LOGS/store" && grep '^| 1.00e+07' "$LOGS/store/store_cuda_$strategy.md" | sed "s/^/    cuda, $strategy: /" | tee -a "$SUMMARY"
done

# 4. The GPU preset, uniform against evos:step, while time is left (each scene one part).
for run in $BENCH_RUNS; do
  IFS=: read -r scene seed stream <<< "$run"
  strategies=(uniform evos:step) tag="s$seed"
  if [ -n "$stream" ]; then strategies=("uniform:sel-seed=$stream" "evos:step+sel-seed=$stream") tag="s${seed}_stream$stream"; fi
  budget=$(( $(left) - 20 ))
  if [ "$budget" -lt 90 ]; then say "bench $scene $tag: skipped, $budget s left"; continue; fi
  step "bench_${scene}_$tag" "$budget" python3 scripts/bench_nerf.py --preset real_gpu --scenes "$scene" --seeds "$seed" \
    --strategies "${strategies[@]}" --steps "$BENCH_STEPS" --evals "$BENCH_EVALS" --shared .gpu-data \
    --out "$LOGS/bench" --work "$LOGS/bench-work" --name "gpu_${scene}_${tag}_steps${BENCH_STEPS}"
  # Copied also when the deadline stopped it: the part then holds the evaluations so far, marked partial.
  cp "$LOGS/bench/gpu_${scene}_${tag}_steps${BENCH_STEPS}".{md,json} "$OUT/" 2>/dev/null
done
