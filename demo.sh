#!/usr/bin/env bash
# The README's main command: install the runtime (no torch, no GPU) into .venv and run the demo job.
#   ./demo.sh                      # 100 val frames + a 75-frame street video at 512x256, about a minute on 2 cores
#   ./demo.sh --val-frames 20      # any jal-demo option passes through (jal-demo --help)
set -euo pipefail
cd "$(dirname "$0")"
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -d .venv ] || python3 -m venv .venv
  . .venv/bin/activate
fi
python -c "import jal_deploy.demo, onnxruntime" 2>/dev/null || pip install -q -e '.[cpu]'
exec jal-demo "$@"
