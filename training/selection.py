"""Label-free snapshot selection: pick a run's snapshot without target labels.

The paper's Fig. 3 links target mIoU to the discriminator: the more target maps D2 takes for source maps, the
better the adaptation. Scores per snapshot, on the target val images (their labels unused):

- `d-prob`: mean D2 source-probability of the target high-level softmax maps (the maps D2 is trained on);
  higher is better. Needs a run with adversarial terms (D2 is in every checkpoint). Each snapshot is judged by
  its own D2, which keeps learning: early snapshots face a weaker judge and tend to look best.
- `d-ref`: the same probability under one fixed referee, the newest snapshot's D2, for every snapshot: the
  best-trained judge, and the same one for all.
- `entropy`: mean per-pixel entropy of the deployed decoder's softmax, divided by log(C); lower is better.
- `last`: the newest snapshot.

When the val images have labels, each snapshot's mIoU is reported beside the scores, with the snapshot the
labels would pick and `last`, so the label-free pick can be judged. Only the snapshots the run kept are
scored: raise `run.keep` before training a run to select from.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from jal_deploy.datasets import find_samples

from .checkpoints import load_trained, read_checkpoint
from .config import from_dict
from .data import Augment, SegmentationDataset
from .evaluate import deployed_output, evaluate
from .losses import discriminator_maps, normalised_entropy, upsample
from .models import Discriminator

CRITERIA = ("d-prob", "d-ref", "entropy", "last")
ADVERSARIAL = ("d-prob", "d-ref")  # criteria that need a run with discriminators
# sort keys of the snapshot rows `select_snapshot` scores: the first after sorting is the criterion's pick
RANKING = {"d-prob": lambda r: -r["d_prob"], "d-ref": lambda r: -r["d_ref"], "entropy": lambda r: r["entropy"],
           "last": lambda r: -r["iteration"]}


class SelectionError(RuntimeError):
    """A run that offers nothing to select from, with a message a user can act on."""


def run_snapshots(run: str | Path) -> tuple[list[tuple[str, Path, int]], str]:
    """[(name, path, iteration)] sorted by iteration, and the name of the newest. `last.pth` is listed only
    when no iter_*.pth holds its iteration."""
    folder = Path(run) / "checkpoints"
    snaps = [(p.stem, p, int(p.stem.split("_")[1])) for p in sorted(folder.glob("iter_*.pth"))]
    last = folder / "last.pth"
    if last.is_file():
        iteration = read_checkpoint(last)["iteration"]
        if not any(it == iteration for _, _, it in snaps):
            snaps.append(("last", last, iteration))
    if not snaps:
        raise SelectionError(f"{folder} holds no snapshot (iter_*.pth or last.pth)")
    snaps.sort(key=lambda s: s[2])
    return snaps, snaps[-1][0]


@torch.no_grad()
def label_free_scores(model, d2: Discriminator | None, loader, device, referee: Discriminator | None = None,
                      d_input: str = "softmax") -> dict:
    """{'d_prob': mean D2 source-probability on target maps (None without D2), 'd_ref': the same under the
    `referee` discriminator (None without one), 'entropy': mean normalised entropy of the deployed prediction}."""
    d_sum, r_sum, h_sum, n = 0.0, 0.0, 0.0, 0
    for batch in loader:
        x = batch["image"].to(device)
        out = model(x)
        prob = F.softmax(upsample(deployed_output(out).float(), x.shape[-2:]), dim=1)
        h_sum += normalised_entropy(prob).mean().item()
        if d2 is not None:  # D2 judges the high-level maps (Dec2), as in training
            high = discriminator_maps(F.softmax(upsample(out["high"].float(), x.shape[-2:]), dim=1), d_input)
            d_sum += torch.sigmoid(d2(high)).mean().item()
            if referee is not None:
                r_sum += torch.sigmoid(referee(high)).mean().item()
        n += 1
    return {"d_prob": d_sum / n if d2 is not None else None,
            "d_ref": r_sum / n if d2 is not None and referee is not None else None, "entropy": h_sum / n}


def select_snapshot(run: str | Path, by: str = "d-prob", val_root: str = "", limit: int = 0,
                    device: str = "auto", progress: bool = True) -> dict:
    """Score every kept snapshot of `run` and pick one by `by` (see CRITERIA). Returns {'by', 'choice',
    'last', 'best_by_labels' (or None), 'snapshots': [{name, iteration, d_prob, entropy, miou}]}."""
    if by not in CRITERIA:
        raise SelectionError(f"--by must be one of {', '.join(CRITERIA)}, got {by!r}")
    run = Path(run)
    config = run / "config.json"
    if not config.is_file():
        raise SelectionError(f"{run} holds no run (no config.json)")
    cfg = from_dict(json.loads(config.read_text()))
    if by in ADVERSARIAL and not cfg.flags.adversarial:
        raise SelectionError(f"{run} trains no discriminator (method {cfg.method.name}); use --by entropy or last")
    snaps, last = run_snapshots(run)
    d = cfg.data
    root = val_root or d.val_root or d.target_root
    labelled = all(s.label is not None for s in find_samples(root, "cityscapes", split=d.val_split,
                                                               list_file=d.val_list or None, require_labels=False))
    val = SegmentationDataset(root, "cityscapes", split=d.val_split, list_file=d.val_list or None, labelled=labelled,
                              augment=Augment(size=tuple(d.target_size) or None), protocol=d.protocol,
                              resize_label=False, limit=limit or d.val_limit or None)
    loader = DataLoader(val, batch_size=1)
    dev = torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")
    def discriminator(state: dict) -> Discriminator:
        d2 = Discriminator(cfg.model.num_classes, cfg.model.ndf).to(dev).eval()
        d2.load_state_dict(state["discriminators"]["d2"])
        return d2

    referee = discriminator(read_checkpoint(snaps[-1][1])) if cfg.flags.adversarial else None
    rows = []
    for name, path, iteration in tqdm(snaps, desc="snapshots", disable=not progress, dynamic_ncols=True):
        model, meta = load_trained(path)
        model.to(dev)
        d2 = discriminator(meta) if cfg.flags.adversarial else None
        row = {"name": name, "iteration": iteration,
               **label_free_scores(model, d2, loader, dev, referee, cfg.method.d_input),
               "miou": None}
        if labelled:
            row["miou"] = evaluate(model, loader, d.protocol, [d.protocol], dev)[d.protocol]["miou"]
        rows.append(row)
    ranking = sorted(rows, key=RANKING[by])
    best = max(rows, key=lambda r: r["miou"])["name"] if labelled else None
    return {"by": by, "run": str(run), "val_root": str(root), "choice": ranking[0]["name"], "last": last,
            "best_by_labels": best, "snapshots": ranking}


def format_selection(result: dict) -> str:
    labelled = result["best_by_labels"] is not None

    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    lines = [f"ranking by {result['by']} (target val images of {result['val_root']}):",
             f"  {'snapshot':18s} {'iteration':>9s} {'d-prob':>7s} {'d-ref':>7s} {'entropy':>7s}"
             + ("  mIoU" if labelled else "")]
    for r in result["snapshots"]:
        mark = "  <- choice" if r["name"] == result["choice"] else ""
        lines.append(f"  {r['name']:18s} {r['iteration']:9d} {num(r['d_prob'], '7.4f')} "
                     f"{num(r.get('d_ref'), '7.4f')} {r['entropy']:7.4f}"
                     + (f" {100 * r['miou']:5.2f}" if labelled else "") + mark)
    lines.append(f"choice: {result['choice']}")
    if labelled:
        miou = {r["name"]: 100 * r["miou"] for r in result["snapshots"]}
        lines.append(f"  target mIoU: choice {miou[result['choice']]:.2f}, last ({result['last']}) "
                     f"{miou[result['last']]:.2f}, best by labels ({result['best_by_labels']}) "
                     f"{miou[result['best_by_labels']]:.2f} (labels used only for this comparison)")
    return "\n".join(lines)
