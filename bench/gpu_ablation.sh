#!/usr/bin/env bash
# The synthetic benchmark table (bench/synthetic_ablation.py) on one GPU: a width-0.5 R18 at 384x192 leaves an
# H100 mostly idle, so the seeds train as side-by-side processes, each under a time limit, then one table is
# printed from every run that finished. Like synthetic_ablation.py it resumes: run it again to finish.
#   bench/gpu_ablation.sh OUT [LIMIT_S] [synthetic_ablation.py options, e.g. --quick or --rows ...]
#   ABLATION_SEEDS="0 1 2" (default) picks the seeds, ABLATION_ROWS the rows besides the oracle (in training
#   order: the most telling first, so a time limit cuts the least). '|' splits ABLATION_ROWS into groups that
#   train side by side, one process per group and seed. A run is trained by one process at a time (a lock per
#   run): a group whose rows start from a stage another group is training (the source-only pretraining, which
#   the cr rows also start from with --cr-warm-iters) waits for it, so such rows are best kept in one group.
set -uo pipefail
[ $# -ge 1 ] || { echo "usage: bench/gpu_ablation.sh OUT [LIMIT_S] [synthetic_ablation.py options]" >&2; exit 2; }
out=$(realpath -m "$1"); limit=${2:-480}; shift; [ $# -ge 1 ] && shift
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
read -r -a seeds <<< "${ABLATION_SEEDS:-0 1 2}"
# row groups in the order they train (the baselines always first); ABLATION_ROWS overrides
IFS='|' read -r -a groups <<< "${ABLATION_ROWS:-prior source-only adabn jal-wtm jal-wtm+fda jal-wtm+fda+ssl1 jal-wtm+fda+ssl2 jal-wtm+fda+sp+ssl1 jal-wtm+fda+sp+ssl2 jal-wtm+sp+ssl1 jal-wtm+sp+ssl2 jal-wtm+sp+ssl3 adabn+sp+ssl1 adaptsegnet jal wtm adaptsegnet+onehot | cr+jal-wtm cr cr+jal-wtm+sp+ssl1 cr+jal-wtm+sp+ssl2 cr+jal-wtm+sp+flip+ssl1 cr+sp+flip+ssl1}"
read -r -a rows <<< "${groups[*]}"
mkdir -p "$out"
# the frames and protocol.json once, before the processes share them
python bench/synthetic_ablation.py --out "$out" "$@" --seeds "${seeds[0]}" --rows prior > "$out/data.log" 2>&1 \
  || { cat "$out/data.log" >&2; exit 1; }
for seed in "${seeds[@]}"; do  # per seed: the oracle in its own process, each group of rows in order in another
  timeout "$limit" python bench/synthetic_ablation.py --out "$out" "$@" --seeds "$seed" --rows oracle \
    > "$out/seed$seed-oracle.log" 2>&1 &
  for g in "${!groups[@]}"; do
    read -r -a group <<< "${groups[$g]}"
    [ ${#group[@]} -gt 0 ] || continue
    timeout "$limit" python bench/synthetic_ablation.py --out "$out" "$@" --seeds "$seed" --rows "${group[@]}" \
      > "$out/seed$seed-group$g.log" 2>&1 &
  done
done
wait
for seed in "${seeds[@]}"; do grep -h "^seed $seed " "$out/seed$seed"-*.log; done
python bench/synthetic_ablation.py --out "$out" "$@" --seeds "${seeds[@]}" --rows "${rows[@]}" oracle --report
