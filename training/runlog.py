"""Run logs: `train.csv` (one row per logged iteration, one column per loss term named after the paper),
`eval.csv` (mIoU and per-class IoU per evaluation) and TensorBoard scalars when tensorboard is installed."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from jal_deploy.atomic import write_text

LOSS_TERMS = ("seg1", "seg2", "seg1_tgt", "seg2_tgt", "kl_tgt", "adv1", "adv2", "jal", "adv_wtm1", "adv_wtm2", "d1",
              "d2", "d_wtm")
D_STATS = tuple(f"{d}_{s}" for d in ("d1", "d2", "d_wtm") for s in ("acc_source", "acc_target", "p_target"))
TRAIN_COLUMNS = ("iteration", "lr", "lr_d", "lr_wtm", *LOSS_TERMS, *D_STATS, "sec_per_iter")


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.6g}" if isinstance(v, float) else str(v)


class RunLog:
    def __init__(self, out: Path, start_iteration: int = 0, tensorboard: bool = True):
        self.train_path, self.eval_path = out / "train.csv", out / "eval.csv"
        # A resumed run drops rows logged after its checkpoint, so the log has no duplicated iterations.
        for path in (self.train_path, self.eval_path):
            _truncate_after(path, start_iteration)
        _upgrade_header(self.train_path, TRAIN_COLUMNS)
        self.eval_columns: list[str] | None = None
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(out / "tb"), purge_step=start_iteration + 1 if start_iteration else None)
            except ImportError:
                self.tb = None

    def _append(self, path: Path, columns, row: dict) -> None:
        new = not path.exists() or path.stat().st_size == 0
        with path.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(columns)
            w.writerow([_fmt(row.get(c)) for c in columns])

    def log_train(self, row: dict) -> None:
        self._append(self.train_path, TRAIN_COLUMNS, row)
        if self.tb:
            it = row["iteration"]
            for key in TRAIN_COLUMNS[1:]:
                if row.get(key) is not None:
                    group = "loss" if key in LOSS_TERMS else ("disc" if key in D_STATS else "misc")
                    self.tb.add_scalar(f"{group}/{key}", row[key], it)

    def log_eval(self, iteration: int, results: dict[str, dict]) -> None:
        for proto, res in results.items():
            row = {"iteration": iteration, "protocol": proto, "miou": res["miou"],
                   **{f"iou_{k}": v for k, v in res["per_class"].items()}}
            columns = list(row)
            self._append(self.eval_path, columns, row)
            if self.tb:
                self.tb.add_scalar(f"val/miou_{proto}", res["miou"], iteration)
                for name, v in res["per_class"].items():
                    if not math.isnan(v):
                        self.tb.add_scalar(f"val_iou_{proto}/{name}", v, iteration)

    def close(self) -> None:
        if self.tb:
            self.tb.close()


def _upgrade_header(path: Path, columns) -> None:
    """A run logged by an older version (fewer loss columns) keeps its rows, re-laid under today's header."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    if reader.fieldnames is None or list(reader.fieldnames) == list(columns):
        return
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    writer.writerows([[r.get(c) or "" for c in columns] for r in rows])
    write_text(path, buf.getvalue())


def _truncate_after(path: Path, iteration: int) -> None:
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= iteration]
    if len(kept) != len(rows):
        buf = io.StringIO()
        csv.writer(buf).writerows(kept)
        write_text(path, buf.getvalue())
