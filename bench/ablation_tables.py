"""The tables `synthetic_ablation.py` prints: Table 4 with its baselines (mean, std, 95 % interval, gap closed)
and the label-free selection table, from the per-seed results it gathers (and how a call's results merge into
those summary.json already holds). Pure formatting and statistics."""
from __future__ import annotations

import math
import statistics

from training.selection import CRITERIA

from ablation_rows import PRETRAINING_ROWS, SOURCE_VAL  # bench/, next to this module

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """(mean, sample std, half-width of the 95 % t interval); std and interval are NaN for one value."""
    n = len(values)
    mean = statistics.mean(values)
    if n < 2:
        return mean, math.nan, math.nan
    std = statistics.stdev(values)
    return mean, std, T95.get(n - 1, 2.228) * std / math.sqrt(n)


def gap_closed(row: float, source_only: float, oracle: float) -> float:
    return (row - source_only) / (oracle - source_only) if oracle != source_only else math.nan


def name_width(rows) -> int:
    """The row-name column: 22 characters, or the longest name, so long pipeline rows keep the columns aligned."""
    return max(22, *(len(r) for r in rows))


def table(per_seed: dict[int, dict], rows: list[str], adapt_rows: tuple[str, ...]) -> tuple[str, dict]:
    """The printed table and its JSON form: mean +- std [95 % CI], per seed, gap closed (`adapt_rows` and the
    rows that score a pretraining as it is) and whether each of those beats the baselines on every seed."""
    seeds = sorted(per_seed)
    shown = [*rows, *(f"{r}@source-val" for r in SOURCE_VAL), *PRETRAINING_ROWS]
    w = name_width(shown)
    lines = [f"{'row':{w}s} {'mean':>6s} {'std':>5s} {'95% CI':>15s}  {'gap closed':>10s}  "
             f"per seed ({', '.join(map(str, seeds))})"]
    out, scored = {}, (*adapt_rows, *PRETRAINING_ROWS)
    for row in shown:
        values = [per_seed[s]["scores"][row] for s in seeds if row in per_seed[s]["scores"]]
        if not values:
            continue
        mean, std, half = mean_ci(values)
        gaps = [gap_closed(per_seed[s]["scores"][row], per_seed[s]["scores"]["source-only"],
                           per_seed[s]["scores"]["oracle"]) for s in seeds
                if row in scored and {row, "source-only", "oracle"} <= set(per_seed[s]["scores"])]
        beats = [per_seed[s]["scores"][row] > max(per_seed[s]["scores"].get("prior", -1),
                                                  per_seed[s]["scores"].get("source-only", -1)) for s in seeds
                 if row in scored and row in per_seed[s]["scores"]]
        ci = f"[{mean - half:5.2f}, {mean + half:5.2f}]" if not math.isnan(half) else ""
        gap = f"{100 * statistics.mean(gaps):9.1f}%" if gaps else ""
        lines.append(f"{row:{w}s} {mean:6.2f} {'' if math.isnan(std) else f'{std:5.2f}':>5s} {ci:>15s}  {gap:>10s}  "
                     + " ".join(f"{v:.2f}" for v in values))
        out[row] = {"mean": mean, "std": std, "ci95": half, "per_seed": values,
                    "gap_closed": gaps or None, "beats_prior_and_source_only_every_seed": all(beats) if beats else None}
    return "\n".join(lines), out


def pseudo_line(pseudo: dict) -> str:
    """The pseudo labels a round trained on: kept share, precision of the kept pixels, per class."""
    precision = pseudo.get("precision") or {}
    per_class = " ".join(f"{name} {100 * v:.0f}" for name, v in precision.get("per_class", {}).items()
                         if v is not None and not math.isnan(v))
    overall = f", precision {100 * precision['overall']:.1f} %" if precision else ""
    return f"pseudo labels: kept {100 * pseudo['kept_total']:.1f} %{overall} ({per_class})"


SELECTION_COLUMNS = (*CRITERIA, "best-by-labels")


def selection_table(per_seed: dict[int, dict], rows: list[str]) -> str:
    """Target mIoU of the snapshot each criterion picks, mean over the seeds that have it."""
    w = name_width(rows)
    lines = [f"{'label-free selection':{w}s} " + " ".join(f"{c:>14s}" for c in SELECTION_COLUMNS) + "  snapshots"]
    for row in rows:
        found = [per_seed[s]["selection"][row] for s in sorted(per_seed) if row in per_seed[s].get("selection", {})]
        if not found:
            continue
        cells = []
        for c in SELECTION_COLUMNS:
            values = [f[c]["miou"] for f in found if c in f]
            cells.append(f"{statistics.mean(values):14.2f}" if values else f"{'':>14s}")
        lines.append(f"{row:{w}s} " + " ".join(cells) + "  " + "/".join(str(f["snapshots"]) for f in found))
    return "\n".join(lines) if len(lines) > 1 else ""


def curve_table(per_seed: dict[int, dict]) -> str:
    """Each pretraining's target mIoU against its minutes (what a longer budget buys the oracle and the
    source-only and colour-randomised networks); minutes at an evaluation are the run's wall time pro rata (a
    pretraining evaluates at its last iteration, so the last evaluation's iteration is its length)."""
    lines = []
    for seed in sorted(per_seed):
        for name, c in sorted(per_seed[seed].get("curves", {}).items()):
            length = c["evals"][-1][0]
            points = " ".join(f"{it}: {100 * m:.1f} ({c['minutes'] * it / length:.0f} min)" for it, m in c["evals"])
            lines.append(f"seed {seed} {name:22s} {points}")
    return "\n".join(lines)


def merge_seeds(saved: dict[str, dict], new: dict[int, dict]) -> dict[int, dict]:
    """This call's per-seed results over those summary.json already holds (same protocol: the caller checks
    protocol.json): a call with a subset of the rows or seeds, e.g. `--report --rows ...`, must not drop the
    results of the others."""
    merged = {int(s): {k: dict(v) for k, v in d.items()} for s, d in saved.items()}
    for seed, result in new.items():
        into = merged.setdefault(seed, {})
        for key, values in result.items():
            into.setdefault(key, {}).update(values)
    return merged
