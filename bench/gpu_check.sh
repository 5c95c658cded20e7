#!/usr/bin/env bash
# The project's GPU check: one call on one H100 or H200, under 8 minutes, on a bare machine with torch (CUDA),
# onnx, onnxruntime, OpenCV, click, tqdm, PyYAML and Pillow: no pip install, no network, no ONNX tools, no
# TensorRT. Runs this source tree through PYTHONPATH.
#   1. R101 JAL+WTM training iterations/s and peak memory at the paper's sizes, fp32 and bf16 (train_speed.py)
#   2. the R101 deploy graph through the torch backend at batch 1 and 8, 1024x512: each speed option on its own
#      (eager, channels-last, pinned transfers, CUDA graphs, torch.compile, the default fast path in fp16 and bf16,
#      classifier padding 24/32, max-autotune last), warm-up apart; fp16/bf16 labels against fp32 on the trained
#      network of --checkpoint; jal-segment end to end; a second process's start from the compile cache
#      (runtime_gpu.py)
#   3. one summary table of all of it, with the decisions it supports (precision, padding) and the targets.
# Each part runs under its own time limit and even if the other failed; what a limit cut is named in the table.
# Arguments go to runtime_gpu.py: --checkpoint (parity needs a trained network; random weights are not accepted
# for it), --frames (street frames for the parity, e.g. Cityscapes val images), --options.
#   bench/gpu_check.sh --checkpoint r101.pth --frames '/data/cityscapes/leftImg8bit/val/frankfurt/*.png'
#   GPU_CHECK_CPU=1 bench/gpu_check.sh --checkpoint tiny.pth   # a tiny network on CPU (what the tests run)
#   GPU_CHECK_TRAIN_LIMIT / GPU_CHECK_RUNTIME_LIMIT (seconds) change the two parts' time limits
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
work=$(mktemp -d "${TMPDIR:-/tmp}/jal-gpu-check.XXXXXX")
if [ "${GPU_CHECK_CPU:-0}" = "1" ]; then
  train=(--device cpu --amp none --iters 1 --warmup 0
         --set model.arch=deeplabv2-r18 model.width=0.125 "data.source_size=[128,64]" "data.target_size=[128,64]"
         "data.crop=[96,48]")
  runtime=(--device cpu --arch deeplabv2-r18 --width 0.125 --size 128x64 --batches 1 2 --precisions fp32 bf16
           --options eager fast cuda_graphs compile pad24 --iters 2 --warmup 1 --video-frames 4 --parity-frames 2)
  train_limit=240 runtime_limit=400
else
  python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())" || exit 1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  train=(--amp none bf16 --iters 10 --warmup 3)
  runtime=(--iters 30 --warmup 5)
  train_limit=140 runtime_limit=300
fi
train_limit=${GPU_CHECK_TRAIN_LIMIT:-$train_limit} runtime_limit=${GPU_CHECK_RUNTIME_LIMIT:-$runtime_limit}
timeout "$train_limit" python -u bench/train_speed.py --preset gta5-cityscapes-r101 --method jal-wtm "${train[@]}" \
  2>&1 | tee "$work/train.log" || echo "train_speed.py failed or ran out of time (exit $?)"
timeout "$runtime_limit" python -u bench/runtime_gpu.py "${runtime[@]}" "$@" --json "$work/runtime.json" \
  || echo "runtime_gpu.py failed or ran out of time (exit $?); the summary keeps what it measured"
echo
python bench/runtime_gpu.py --summary "$work/train.log" "$work/runtime.json"
