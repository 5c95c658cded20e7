"""The `pipeline:` list of a preset: the stages of an adaptation recipe, read and checked before anything runs.

A recipe is a file users read, copy and edit, so every stage names what it does and nothing is implied:

    pipeline:
      - name: source            # a folder `NN-source/` of the run
        method: {name: source-only}
        optim: {iters: 1000}
      - name: jal-wtm           # starts from the previous model stage
        method: {name: jal-wtm}
      - name: round1
        kind: self-train        # pseudo labels from the previous model, then one training round on them
        pseudo: {spatial_prior: true}
      - {name: pick, kind: pick, by: last}   # the final model among the model stages, by a label-free rule
      - {name: export, kind: export}          # the picked model as a verified ONNX file

Each model stage's configuration is the preset's own sections, then the stage's sections (`model`, `data`,
`method`, `optim`, `run`), then the command line's `--set`; `size_scale` scales its training sizes (a coarse stage
of a coarse-to-fine schedule); `init` names an earlier stage to start from instead of the previous model stage.
A stage after a `pick` starts from the picked model (a round can build on the best stage so far), and `export`
writes the model of the last `pick` before it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .config import ConfigError

KINDS = ("train", "self-train", "pick", "export")
MODEL_KINDS = ("train", "self-train")
SECTIONS = ("model", "data", "method", "optim", "run")
PSEUDO_KEYS = ("spatial_prior", "flip", "percentile", "cap")  # the pseudo-label options a recipe may set
# label-free rules that choose the final model among the stages (training/signals.py computes their signals)
PICK_RULES = ("last", "entropy", "flip-agreement", "decoder-agreement", "share-drift")
EXPORT_KEYS = ("int8", "fp16", "output")


@dataclass
class Stage:
    name: str
    kind: str = "train"
    sections: dict = field(default_factory=dict)  # model/data/method/optim/run overrides
    init: str = ""             # an earlier model stage to start from ("" = the previous model stage)
    size_scale: float = 1.0    # factor on data.source_size / target_size / crop
    pseudo: dict = field(default_factory=dict)
    by: str = "last"           # pick
    among: tuple[str, ...] = ()  # pick: the candidate stages ("" = every model stage)
    export: dict = field(default_factory=dict)

    @property
    def makes_model(self) -> bool:
        return self.kind in MODEL_KINDS


def parse_pipeline(raw, where: str = "pipeline") -> list[Stage]:
    """The stages of a `pipeline:` list, with every mistake named (an unknown key, kind or stage reference)."""
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where} must be a non-empty list of stages")
    stages: list[Stage] = []
    for i, item in enumerate(raw, 1):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise ConfigError(f"{where}: stage {i} must be a mapping with a `name`")
        stages.append(_stage(dict(item), f"{where}: stage {i} ({item['name']})", stages))
    if not any(s.makes_model for s in stages):
        raise ConfigError(f"{where}: no stage trains a model (kind train or self-train)")
    if sum(s.kind == "export" for s in stages) > 1:
        raise ConfigError(f"{where}: at most one `export` stage")
    return stages


def _stage(item: dict, where: str, before: list[Stage]) -> Stage:
    name, kind = item.pop("name"), item.pop("kind", "train")
    if kind not in KINDS:
        raise ConfigError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if any(s.name == name for s in before):
        raise ConfigError(f"{where}: another stage is already named {name!r}")
    if "/" in name or name.startswith("."):
        raise ConfigError(f"{where}: a stage name is a folder name: no '/' and no leading '.'")
    models = [s.name for s in before if s.makes_model]
    stage = Stage(name=name, kind=kind)
    allowed = {"train": ("init", "size_scale", *SECTIONS), "self-train": ("init", "pseudo", *SECTIONS),
               "pick": ("by", "among"), "export": EXPORT_KEYS}[kind]
    unknown = sorted(set(item) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} for a {kind} stage; known: {', '.join(allowed)}")
    stage.sections = {k: item[k] for k in SECTIONS if k in item}
    for key, value in stage.sections.items():
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: `{key}` must be a mapping of config keys")
    if kind == "self-train" and not models:
        raise ConfigError(f"{where}: a self-train stage labels with an earlier model stage; there is none")
    if kind in ("pick", "export") and not models:
        raise ConfigError(f"{where}: a {kind} stage needs an earlier model stage")
    stage.init = str(item.get("init", ""))
    if stage.init and stage.init not in models:
        raise ConfigError(f"{where}: init {stage.init!r} is not an earlier model stage ({', '.join(models) or 'none'})")
    stage.size_scale = float(item.get("size_scale", 1.0))
    if not 0 < stage.size_scale <= 1:
        raise ConfigError(f"{where}: size_scale must be in (0, 1], got {stage.size_scale}")
    stage.pseudo = dict(item.get("pseudo") or {})
    if bad := sorted(set(stage.pseudo) - set(PSEUDO_KEYS)):
        raise ConfigError(f"{where}: unknown pseudo option {bad[0]!r}; known: {', '.join(PSEUDO_KEYS)}")
    stage.by = str(item.get("by", "last"))
    if stage.by not in PICK_RULES:
        raise ConfigError(f"{where}: by must be one of {', '.join(PICK_RULES)}, got {stage.by!r}")
    stage.among = tuple(item.get("among") or ())
    if missing := [n for n in stage.among if n not in models]:
        raise ConfigError(f"{where}: among names {missing[0]!r}, not an earlier model stage")
    stage.export = {k: item[k] for k in EXPORT_KEYS if k in item}
    return stage
