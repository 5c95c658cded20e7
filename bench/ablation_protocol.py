"""The synthetic benchmark's protocol (`synthetic_ablation.py`): the fields that define it besides the row and the
seed, how a folder's saved protocol is checked, the frames each seed trains and is scored on, and the per-row
choices every run of a seed shares (BatchNorm policy, the coarse part of a coarse-to-fine pretraining)."""
from __future__ import annotations

import fcntl
import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from jal_deploy.synth import generate
from training.config import merge_overrides, resolve

# bench/, next to this script
from ablation_rows import ADAPT_ROWS


@dataclass
class Protocol:
    """Everything that defines the benchmark besides the row and the seed (recorded in summary.json)."""

    preset: str = "synthetic-bench"
    frames: int = 600               # target train frames (and source frames, unless source_frames says otherwise)
    source_frames: int = 0          # > 0: this many source frames instead (GTA5 has 8.4x Cityscapes' train frames)
    frame_size: tuple[int, int] = (512, 256)
    data_seed: int = 0              # the training frames (and the val used while choosing the protocol)
    eval_seed: int = 1127           # the held-out target val the table reports
    eval_frames: int = 200
    source_val_seed: int = 1000     # held-out source frames for the size of the gap
    source_val_frames: int = 100
    pretrain_iters: int = 2000
    coarse_iters: int = 0           # > 0: every pretraining first runs this many iterations at half size (coarse-to-fine)
    cr_warm_iters: int = 0          # > 0: the cr pretraining continues the source-only one for this many iterations
    cr_warm_coarse_iters: int = 0   # > 0 (with cr_warm_iters): that continuation first runs this many at half size
    adapt_iters: int = 500
    adapt_lr: float = 1e-2
    adapt_lr_wtm: float = 4e-3
    eval_every: int = 125
    pretrain_eval_every: int = 500  # 0: as eval_every (the pretraining curves: oracle mIoU against time)
    last_k: int = 3
    target_bn_frames: int = 200     # adaptation rows: BatchNorm statistics of this many target frames (0: frozen)
    baseline_bn: str = "train"      # source-only and oracle continue with batch statistics (train) or frozen ones
    fda_beta: float = 0.01          # the +fda rows (FDA's published value)
    label_shift: bool = True        # False: target streets with the source's composition (`jal-data synth --no-label-shift`)
    pretrained: str = ""            # another bench folder whose finished pretrainings the second stages start from
    overrides: tuple[str, ...] = ()


# what a second-stage study may change while it starts from another folder's pretrainings (`--pretrained`)
SECOND_STAGE = {"eval_seed", "eval_frames", "adapt_iters", "adapt_lr", "adapt_lr_wtm", "eval_every", "last_k",
                "target_bn_frames", "baseline_bn", "fda_beta", "pretrained"}


FIELD_HELP = {"source_frames": "source (GTA5-format) training frames, when they should differ from --frames, the "
                               "target train frames: the real benchmark's source is the larger set (GTA5 24966 "
                               "frames, Cityscapes train 2975); default 0, as many as --frames",
              "pretrained": "a second-stage study: start every row from the finished pretrainings of this bench "
                            "folder (read only; its protocol must match but for the second stage and the val)",
              "coarse_iters": "coarse-to-fine pretraining: every pretraining (source-only, oracle, cr) first trains "
                              "this many iterations at half the width and height, then --pretrain-iters at full size "
                              "from there (default 0: full size only)",
              "cr_warm_iters": "warm-started colour-randomised pretraining: the cr rows' pretraining starts from the "
                               "finished source-only pretraining and trains this many iterations on colour-randomised "
                               "source images (poly restarted), instead of --pretrain-iters from scratch (default 0)",
              "cr_warm_coarse_iters": "coarse-to-fine warm start (with --cr-warm-iters): the colour-randomised "
                                      "continuation first trains this many iterations at half the width and height, "
                                      "then --cr-warm-iters at full size from there (default 0: full size only)"}


def saved_protocol(path: Path) -> dict:
    """A folder's protocol.json; a protocol saved before a field existed had that field's default."""
    return {**asdict(Protocol()), **json.loads(path.read_text())}


def load_protocol(path: Path) -> Protocol:
    """A folder's protocol.json as a Protocol (JSON lists back to tuples). A field the Protocol no longer has is
    left out here, so the caller's comparison with `saved_protocol` refuses the folder instead of crashing."""
    known = asdict(Protocol())
    saved = saved_protocol(path)
    return Protocol(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in known})


def check_pretrained(p: Protocol) -> None:
    """Refuse pretrainings of another protocol: everything but the second stage must match the folder's."""
    saved = Path(p.pretrained) / "protocol.json"
    if not saved.is_file():
        raise SystemExit(f"--pretrained {p.pretrained}: no protocol.json there (not a bench folder)")
    theirs = saved_protocol(saved)
    ours = json.loads(json.dumps(asdict(p)))
    differ = sorted(k for k in ours if k not in SECOND_STAGE and theirs[k] != ours[k])
    if differ:
        raise SystemExit(f"--pretrained {p.pretrained}: its pretrainings had another {', '.join(differ)} "
                         f"({', '.join(f'{k}={theirs[k]!r}' for k in differ)})")


QUICK = dict(frames=8, frame_size=(128, 64), eval_frames=4, source_val_frames=4, pretrain_iters=3, adapt_iters=2,
             eval_every=1, last_k=2, overrides=("model.width=0.125", "data.source_size=96x48",
                                                "data.target_size=96x48", "data.batch_size=2"))


def bn_policy(row: str, p: Protocol) -> dict:
    """BatchNorm during the second stage. source-only and oracle continue as they were pretrained: batch
    statistics, running averages from their own batches (`baseline_bn=train`; source-only sees no target image,
    so its statistics stay source statistics). Continuing at the pretraining's learning rate with the statistics
    frozen instead once cost a CPU oracle 18 mIoU. Adaptation rows, with `target_bn_frames`, normalise each batch
    in its own domain and evaluate/save with statistics re-estimated on that many target train frames (AdaBN);
    `adabn` is source-only training plus exactly that, the share of the gap that statistics alone close."""
    if row in ADAPT_ROWS:
        if p.target_bn_frames:
            return {"bn_mode": "train", "target_bn_frames": p.target_bn_frames}
        return {"bn_mode": "frozen", "target_bn_frames": 0}
    if p.baseline_bn not in ("train", "frozen"):
        raise SystemExit(f"--baseline-bn must be train or frozen, got {p.baseline_bn!r}")
    return {"bn_mode": p.baseline_bn, "target_bn_frames": 0}


def coarse_stage(pre: dict, p: Protocol, iters: int = 0) -> dict:
    """The coarse part of a coarse-to-fine pretraining: `iters` (default `coarse_iters`) at half the width and
    height of the pretraining's own training size, the rest alike. An iteration there costs about a quarter, so the
    network learns shape over more iterations for the same minutes; the full-size part that follows (initialised from
    it, poly restarted) teaches the small classes, which need the resolution."""
    data = resolve(p.preset, pre).data
    return merge_overrides(pre, {"optim": {"iters": iters or p.coarse_iters},
                                 "data": {"source_size": half_size(data.source_size),
                                          "target_size": half_size(data.target_size)}})


def half_size(size) -> list[int]:
    return [max(1, size[0] // 2), max(1, size[1] // 2)]


@contextmanager
def locked(target: Path):
    """`target` (a folder or file) held by one process at a time: seeds and row groups started side by side on one
    folder share its frames, its summary and the pretrainings their rows start from. The lock file `.NAME.lock`
    sits beside `target`, so a folder's listing stays its own."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(f".{target.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also when the process dies
        yield


def ensure_data(root: Path, p: Protocol) -> dict[str, Path]:
    """Training frames, the held-out target val and the held-out source frames, each generated once (with
    `pretrained`, the training and source frames of that folder)."""
    trees = {
        "train": (p.data_seed, {"gta5": p.source_frames or p.frames, "synthia": 0, "cs_train": p.frames, "cs_val": 0}),
        "eval": (p.eval_seed, {"gta5": 0, "synthia": 0, "cs_train": 0, "cs_val": p.eval_frames}),
        "source-val": (p.source_val_seed, {"gta5": p.source_val_frames, "synthia": 0, "cs_train": 0, "cs_val": 0}),
    }
    out = {}
    with locked(root):  # the second process waits, then reads the frames the first wrote
        for name, (seed, counts) in trees.items():
            tree = root / f"{name}-seed{seed}"
            theirs = Path(p.pretrained) / "data" / tree.name
            if p.pretrained and name != "eval" and (theirs / "synth.json").is_file():
                out[name] = theirs  # the very frames the pretrainings saw (only read)
                continue
            if not (tree / "synth.json").is_file():
                generate(tree, seed=seed, counts=counts, size=p.frame_size, force=tree.exists(), progress=False,
                         label_shift=p.label_shift)
            out[name] = tree
    return out
