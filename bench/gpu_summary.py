"""The one table bench/gpu_check.sh ends with: bench/train_speed.py's log and bench/runtime_gpu.py's --json read
back, with what the measurements decide (the precision to deploy, classifier padding) and issue 60's targets; a
row that was not measured says so, never a guess (`python bench/runtime_gpu.py --summary TRAIN_LOG JSON`)."""
from __future__ import annotations

import json
import re
from pathlib import Path

PAD_GAIN = 3.0  # % faster at every batch before padding is worth its place (below that it is noise)
TARGETS = {1: 150.0, 8: 350.0}  # FPS at 1024x512 (issue 60), and labels agreeing with fp32 on >= 99.5 %
AGREEMENT_TARGET = 99.5


def seconds_text(row: dict) -> str:
    """A measurement's warm-up seconds (compile, CUDA graph capture, first call), as far as it has them."""
    parts = [f"{name} {row[key]:.1f} s" for key, name in (("compile_s", "compile"), ("capture_s", "capture"),
                                                           ("first_call_s", "first call")) if row.get(key) is not None]
    return ", ".join(parts)


TRAIN_ROW = re.compile(r"^(none|fp16|bf16)\s+([\d.]+)\s+([\d.]+)\s+(\S+)\s*$")


def train_rows(log: Path) -> list[dict]:
    """The `amp it/s s/it peak GiB` rows bench/train_speed.py prints."""
    rows = []
    for line in log.read_text(errors="replace").splitlines() if log.is_file() else []:
        found = TRAIN_ROW.match(line.strip())
        if found:
            rows.append({"amp": found[1], "it_s": float(found[2]), "peak_gib": found[4]})
    return rows


def _speed_value(r: dict) -> str:
    if "error" in r:
        return r["error"]
    if "backend_fps" not in r:
        return f"{seconds_text(r)} (whole process {r['process_s']:.1f} s)" if "process_s" in r else seconds_text(r)
    return (f"{r['backend_fps']:.1f} FPS (stream {r['stream_fps']:.1f}, graph only {r['graph_fps']:.1f}); "
            f"warm-up {seconds_text(r)}")


def _fps(data: dict, option: str, precision: str, batch: int) -> float | None:
    for r in data.get("speed", []):
        if (r["option"], r["precision"], r["batch"]) == (option, precision, batch) and "backend_fps" in r:
            return r["backend_fps"]
    return None


def decisions(data: dict) -> list[tuple[str, str, str]]:
    """What the measurements decide: the reduced precision to deploy, whether classifier padding earns its place,
    and the issue's targets. Each says `not measured` when its rows are missing, never guesses."""
    batches = sorted({p[2] for p in data.get("planned", [])})
    rows = []
    measured = sorted({r["precision"] for r in data.get("speed", []) if r["option"] == "fast" and "backend_fps" in r})
    speeds = {p: [_fps(data, "fast", p, b) for b in batches] for p in measured}
    complete = [p for p in measured if all(v is not None for v in speeds[p])]
    if len(complete) >= 2:
        winners = [max(complete, key=lambda p: speeds[p][i]) for i in range(len(batches))]
        among = f"fast path, among {', '.join(complete)}"
        if len(set(winners)) == 1:
            rows.append(("decision", "precision", f"{winners[0]} (faster at every batch size; {among})"))
        else:
            rows.append(("decision", "precision", ", ".join(f"{p} at batch {b}" for p, b in zip(winners, batches))
                         + f" (none faster at every batch size; {among})"))
    else:
        rows.append(("decision", "precision", "not measured (needs the fast rows in two precisions)"))
    low = "fp16" if any(p == "fp16" for _, p, _ in data.get("planned", [])) else "fp32"  # fp32 stands in on CPU
    for pad in ("pad24", "pad32"):
        gains = [(_fps(data, pad, low, b), _fps(data, "cuda_graphs", low, b)) for b in batches]
        if batches and all(a is not None and b is not None for a, b in gains):
            pct = [100 * (a / b - 1) for a, b in gains]
            keep = all(p > PAD_GAIN for p in pct)
            rows.append(("decision", f"--pad-classes {pad[3:]}", ("keep" if keep else "leave off") + " ("
                         + ", ".join(f"{p:+.1f} % at batch {b}" for p, b in zip(pct, batches))
                         + f"; kept only if > {PAD_GAIN:g} % at every batch)"))
        elif any(o == pad for o, _, _ in data.get("planned", [])):
            rows.append(("decision", f"--pad-classes {pad[3:]}", "not measured"))
    if not data.get("targets"):
        return rows + [("target", "-", "not checked: the targets are R101 at 1024x512 on a GPU")]
    for b, target in TARGETS.items():
        best = max((v for v in (_fps(data, "fast", p, b) for p in ("fp16", "bf16")) if v is not None), default=None)
        if b in batches:
            rows.append(("target", f">= {target:g} FPS at batch {b}", "not measured" if best is None else
                         f"{'met' if best >= target else 'not met'}: {best:.1f} FPS (fast, best precision)"))
    agreements = [r["argmax_agreement"] for r in data.get("parity", []) if "argmax_agreement" in r]
    rows.append(("target", f">= {AGREEMENT_TARGET:g} % labels as fp32", "not measured" if not agreements else
                 f"{'met' if min(agreements) >= AGREEMENT_TARGET else 'not met'}: lowest {min(agreements):.3f} %"))
    return rows


def summary(train_log: Path, runtime_json: Path) -> str:
    try:
        data = json.loads(runtime_json.read_text()) if runtime_json.is_file() else {}
    except json.JSONDecodeError:
        data = {}
    rows = [("training JAL+WTM", f"{'fp32' if r['amp'] == 'none' else r['amp']}",
             f"{r['it_s']:.2f} it/s, peak {r['peak_gib']} GiB") for r in train_rows(train_log)]
    rows = rows or [("training JAL+WTM", "-", "not measured (see its log above)")]
    measured = set()
    for r in data.get("speed", []):
        measured.add((r["option"], r["precision"], r["batch"]))
        part = "compile cache" if "2nd process" in r["option"] else "deploy graph, torch backend"
        rows.append((part, f"{r['precision']} batch {r['batch']} [{r['option']}]", _speed_value(r)))
    failed = {(r["option"], r["precision"]) for r in data.get("speed", []) if r["batch"] is None}
    for option, precision, batch in data.get("planned", []):
        if (option, precision, batch) not in measured and (option, precision) not in failed:
            rows.append(("deploy graph, torch backend", f"{precision} batch {batch} [{option}]",
                         "not reached within the time limit"))
    e2e = data.get("end_to_end")
    if e2e and "error" in e2e:
        rows.append(("jal-segment end to end", "-", e2e["error"]))
    else:
        first = f", first call {e2e['first_call_s']:.2f} s" if e2e and "first_call_s" in e2e else ""
        rows.append(("jal-segment end to end", f"{e2e['precision']} batch 1" if e2e else "-",
                     f"{e2e['fps']:.1f} FPS (inference {e2e['inference_fps']:.1f}{first})" if e2e else "not measured"))
    for r in data.get("parity", []):
        rows.append(("parity on this device", r.get("precision", "-"), r["error"]) if "error" in r else
                    ("parity on this device", f"{r['precision']} vs {r['reference']}",
                     f"argmax agreement {r['argmax_agreement']:.3f} %"
                     + (f"; {r['near_ties']:.1f} % near-ties, decisive pixels {r['decisive_agreement']:.3f} %"
                        if r.get("decisive_agreement") is not None else "")))
    done = {r.get("precision") for r in data.get("parity", [])}
    for precision in data.get("parity_planned", []):
        if precision not in done:
            rows.append(("parity on this device", f"{precision} vs fp32", "not reached within the time limit"))
    if not data.get("parity") and not data.get("parity_planned"):
        rows.append(("parity on this device", "-", "not measured"))
    if data.get("planned"):
        rows += decisions(data)
    widths = [max(len(r[i]) for r in rows + [("part", "setting", "result")]) for i in range(3)]
    line = "| " + " | ".join(f"{{:{w}s}}" for w in widths) + " |"
    out = [f"GPU check summary: {data.get('device', 'device unknown')}", line.format("part", "setting", "result"),
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return "\n".join(out + [line.format(*r) for r in rows])
