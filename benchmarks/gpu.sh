#!/usr/bin/env bash
# Every GPU figure of BENCHMARKS.md's GPU section in one go on one GPU (about 7 minutes planned on an H100), as compact
# tables: training steps eager and on the fast path (trainer=gpu_fast) for every block, ResNet-20 and ResNet-110, with
# paired ratios to attn=none, share of the measured matmul peak and step memory; batch-size scaling; the Lightning loop
# against a bare loop; the real loop's host time per step; real epochs with their validation; four runs packed on the
# GPU against one alone. It starts by checking that captured steps train as plain ones do on this GPU.
#   bash benchmarks/gpu.sh            # from the checkout's root; with $OUT set, also $OUT/gpu.log and the JSON files
# Where Hydra and OmegaConf are not installed but .whl holds their wheels (../shared/gpu/wheels.sh), it installs them
# into /tmp/site first. Each bench also writes its raw times to outputs/bench/.
set -uo pipefail  # no -e: a failing section is reported and the next one still runs
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# on the device machine $OUT comes back: the whole log and the bench's JSON files go there
if [ -n "${OUT:-}" ]; then exec > >(tee "$OUT/gpu.log") 2>&1; fi
if ! $PY -c "import hydra, omegaconf" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
ZOO=none,se,cbam,c3,coord,eca,gc,ge,nonlocal,simam,srm,triplet
BENCH=($PY -m c3exp bench bench.device=cuda bench.warmup=5 bench.steps=20 data=synthetic)
EPOCHS="data=synthetic trainer.max_epochs=3 trainer.enable_progress_bar=false"
section() { printf '\n== %s (%s UTC, %ds in)\n' "$1" "$(date -u +%H:%M:%S)" "$SECONDS"; }
run() { "$@" || echo "!! failed with status $?: $*"; }

section "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
$PY -c "import torch, lightning; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'lightning', lightning.__version__)"
git log -1 --format='code %h %cd' --date=short 2>/dev/null || true

section "captured steps train as plain ones (fp32 and bf16; close, not bit for bit, on a GPU)"
run $PY benchmarks/gpu_epochs.py agree \
    "model=resnet20 attn=c3 data=digits trainer=gpu_fast trainer.precision=32-true trainer.max_epochs=3 trainer.enable_progress_bar=false" \
    "model=resnet20 attn=c3 data=digits trainer=gpu_fast trainer.max_epochs=3 trainer.enable_progress_bar=false"
section "ResNet-20 steps, eager fp32 (today's default), every block"
run "${BENCH[@]}" model=resnet20 attn=$ZOO bench.peak=true
section "ResNet-20 steps, fast path (trainer=gpu_fast: bf16, NHWC, CUDA graphs), every block"
run "${BENCH[@]}" trainer=gpu_fast model=resnet20 attn=$ZOO bench.peak=true
section "ResNet-110 steps, eager fp32"
run "${BENCH[@]}" model=resnet110 attn=none,se,cbam,c3 bench.steps=10
section "ResNet-110 steps, fast path, every block"
run "${BENCH[@]}" trainer=gpu_fast model=resnet110 attn=$ZOO bench.peak=true
section "batch-size scaling, fast path"
run "${BENCH[@]}" trainer=gpu_fast model=resnet20 attn=none,c3 bench.batch_size=128,512,1024
section "the Lightning loop against a bare loop of the same step (fast path, then eager)"
run "${BENCH[@]}" trainer=gpu_fast model=resnet20,resnet110 attn=none bench.mode=loop bench.rounds=3
run "${BENCH[@]}" model=resnet20 attn=none bench.mode=loop bench.rounds=3
section "host time of the real training loop around a graphed step whose replay does nothing"
run $PY benchmarks/loop_overhead.py trainer=gpu_fast
section "real epochs: 50k training + 10k validation images on the GPU (median of epochs 1-2)"
run $PY benchmarks/gpu_epochs.py epochs \
    "model=resnet20 attn=none trainer=gpu data.on_device=true $EPOCHS" \
    "model=resnet20 attn=none trainer=gpu_fast $EPOCHS" "model=resnet20 attn=c3 trainer=gpu_fast $EPOCHS" \
    "model=resnet110 attn=none trainer=gpu_fast $EPOCHS" "model=resnet110 attn=c3 trainer=gpu_fast $EPOCHS"
section "four ResNet-20 runs packed on the GPU (hydra/launcher=parallel hydra.launcher.n_jobs=4) against one alone"
run $PY benchmarks/gpu_epochs.py pack --jobs 4 "model=resnet20 attn=none trainer=gpu_fast data=synthetic trainer.max_epochs=4 trainer.enable_progress_bar=false"
section "done"
if [ -n "${OUT:-}" ]; then cp outputs/bench/*.json "$OUT"/ 2>/dev/null; fi
true
