#!/usr/bin/env bash
# The project's GPU check (one H100, under 9 minutes): R101 JAL+WTM training iterations/s and peak memory
# at the paper's sizes, fp32 and bf16; then the runtime: the R101 deploy graph through the torch backend
# (fp32/fp16/bf16, batch 1 and 8 at 1024x512) and jal-segment end to end on a video (bench/runtime_gpu.py).
# Run from the repository root after installing as the README says. Each part runs even if the other fails.
set -uo pipefail
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 300 python bench/train_speed.py --preset gta5-cityscapes-r101 --method jal-wtm --amp none bf16 --iters 20 --warmup 3 || echo "train_speed.py failed (exit $?)"
timeout 210 python bench/runtime_gpu.py || echo "runtime_gpu.py failed (exit $?)"
