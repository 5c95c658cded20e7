#!/usr/bin/env bash
# The project's GPU check (one H100, under 8 minutes): R101 JAL+WTM training iterations/s and peak memory
# at the paper's sizes, fp32 and bf16. Run from the repository root after installing as the README says.
set -euo pipefail
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 420 python bench/train_speed.py --preset gta5-cityscapes-r101 --method jal-wtm --amp none bf16 --iters 20 --warmup 3
