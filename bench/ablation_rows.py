"""The rows of the synthetic benchmark table (`synthetic_ablation.py`): their names, and what each name runs."""
from __future__ import annotations

# the paper's later stages stacked on JAL+WTM: Fourier style transfer of the source images, then self-training;
# `+sp`: its pseudo labels weighted by the source labels' spatial prior (CBST-SP); `jal-wtm+sp+ssl*`: the rounds
# straight on JAL+WTM, without FDA
PIPELINE_ROWS = ("jal-wtm+fda", "jal-wtm+fda+ssl1", "jal-wtm+fda+ssl2", "jal-wtm+fda+sp+ssl1", "jal-wtm+fda+sp+ssl2",
                 "jal-wtm+sp+ssl1", "jal-wtm+sp+ssl2", "jal-wtm+sp+ssl3")
# `+onehot`: the adversarial rows with discriminators on one-hot maps (method.d_input=onehot: layout, not confidence)
ONEHOT_ROWS = ("adaptsegnet+onehot", "jal-wtm+onehot")
# `cr`: the same stages on a source pretraining with colour randomisation (every labelled image under a random
# 1x1 colour matrix, unblended: data.rand_conv with kernels [1] and no mixing), kept on the source stream in every
# later stage; `cr` alone is that pretraining trained on as `adabn` is (source iterations, target statistics)
# `+flip`: pseudo labels from the softmax averaged over each image and its mirror image (`self-train --flip`)
CR_ROWS = ("cr", "cr+jal-wtm", "cr+jal-wtm+sp+ssl1", "cr+jal-wtm+sp+ssl2", "cr+jal-wtm+sp+flip+ssl1",
           "cr+jal-wtm+sp+flip+ssl2")
CR_DATA = {"rand_conv": True, "rand_conv_kernels": [1], "rand_conv_mix": False}
# the same self-training rounds without any adversarial stage, from `adabn` / `cr` (the control that tells
# whether the rounds need JAL+WTM before them)
NO_ADVERSARIAL_SSL_ROWS = ("adabn+sp+ssl1", "cr+sp+flip+ssl1")
# `+all`: the round's pseudo labels on every pixel, the teacher's (prior-weighted) argmax with no class threshold
# (percentile 0 instead of the median): coverage instead of precision. With the round's own labels cleaned of every
# wrong pixel the round gained +1.1 to +2.1 mIoU (3 seeds), with the true labels on every pixel +8.7 to +11.1
# (`round_upper_bounds.py`): what the thresholds leave out weighs more than the errors they keep
COVERAGE_ROWS = ("cr+jal-wtm+sp+all+ssl1", "cr+jal-wtm+sp+all+ssl2")
# `+ens`: pseudo labels from the softmax averaged over two models: round 1 the row's own adapted model and the
# other route's JAL+WTM (`jal-wtm` <-> `cr+jal-wtm`: with and without colour randomisation), which fail on
# different classes (`self-train --teacher`), each later round the previous round's student and that same
# partner (`--teachers-every-round`); the student starts from the row's own model and keeps its route's source
# stream: `cr+jal-wtm+ens+...` is the same teachers with the colour-randomised student
ENSEMBLE_ROWS = ("jal-wtm+ens+sp+ssl1", "jal-wtm+ens+sp+ssl2", "cr+jal-wtm+ens+sp+ssl1", "cr+jal-wtm+ens+sp+ssl2")
# `+tgt`: the same rounds trained on the pseudo-labelled target images alone (method.target_only: no source
# image, no discriminator), whose labels then meet no source loss that teaches each class's source appearance;
# `+tgtcr`: those images under colour randomisation (CR_DATA), the student's input noised as in Noisy Student
# `+fresh`: every round's student starts from the adapted model; the previous round's student only labels
# `cr+jal-wtm+ens+sp+tgt+ssl*`: the two-teacher target-only rounds with the colour-randomised route's model as the
# student's start (its target images unrandomised: target-only rounds have no source stream to randomise)
TARGET_ONLY_ROWS = ("jal-wtm+sp+tgt+ssl1", "jal-wtm+sp+tgt+ssl2", "jal-wtm+ens+sp+tgt+ssl1", "jal-wtm+ens+sp+tgt+ssl2",
                    "jal-wtm+ens+sp+tgtcr+ssl1", "jal-wtm+ens+sp+tgtcr+ssl2", "jal-wtm+ens+sp+tgt+fresh+ssl2",
                    "cr+jal-wtm+ens+sp+tgt+ssl1", "cr+jal-wtm+ens+sp+tgt+ssl2")
# `+anchor`: every later round's pseudo labels keep round 1's class shares (`self-train --anchor-shares`)
ANCHOR_ROWS = ("jal-wtm+sp+tgt+anchor+ssl2",)
# `+cb`: the rounds' pseudo-label loss with ENet's class weights (method.pseudo_class_weights=enet)
CLASS_WEIGHT_ROWS = ("jal-wtm+sp+tgt+cb+ssl1", "jal-wtm+sp+tgt+cb+ssl2", "jal-wtm+ens+sp+tgt+cb+ssl1",
                     "jal-wtm+ens+sp+tgt+cb+ssl2")
# `+mix`: online self-training on ClassMix images with an EMA teacher (method.mix=classmix, DACS), started from
# the row before `+mix` and trained like it (its method, route and rate) for the second stage's length:
# `cr+jal-wtm+mix` on JAL+WTM, `cr+mix` the control without an adversarial stage before it
MIX_ROWS = ("cr+jal-wtm+mix", "cr+mix", "jal-wtm+mix")
# `+rect`: the rounds' pseudo-label loss rectified by the student's two decoders (method.pseudo_rectify): each
# pixel weighted by exp(-KL(Dec2 || Dec1)), plus that KL; `+all+rect` on labels on every pixel, as published
# (Zheng & Yang 2021 let the rectification, not a threshold, discount the wrong labels)
RECTIFY_ROWS = ("cr+jal-wtm+sp+rect+ssl1", "cr+jal-wtm+sp+all+rect+ssl1")
TARGET_ONLY = ("+tgt", "+tgtcr")
# how the rounds label and train, after the stem's `+sp`
ROUND_OPTIONS = ("+flip", "+all", "+fresh", "+anchor", "+cb", "+rect", *TARGET_ONLY)
LATER_ROUNDS = ("+fresh", "+anchor")  # options that change only the rounds after the first
ADAPT_ROWS = ("adabn", "adaptsegnet", "jal", "wtm-dec1", "wtm-dec2", "wtm", "jal-wtm", *PIPELINE_ROWS, *ONEHOT_ROWS,
              *CR_ROWS, *COVERAGE_ROWS, *NO_ADVERSARIAL_SSL_ROWS, *ENSEMBLE_ROWS, *TARGET_ONLY_ROWS, *ANCHOR_ROWS,
              *CLASS_WEIGHT_ROWS, *MIX_ROWS, *RECTIFY_ROWS)
ROWS = ("prior", "source-only", *ADAPT_ROWS, "oracle")
DEFAULT_ROWS = ("prior", "source-only", "adabn", "adaptsegnet", "jal", "wtm", "jal-wtm", *PIPELINE_ROWS, *CR_ROWS,
                *NO_ADVERSARIAL_SSL_ROWS, "oracle")
# rows also scored on held-out source frames (`ROW@source-val`): how well the network segments its own domain
SOURCE_VAL = ("source-only", "cr")
# rows that score a pretraining as it is, with no second stage, and get a gap closed like the adaptation rows:
# `cr@pretraining` is cr's pretraining with its own source statistics (colour randomisation alone, before the
# first target image); `adabn@pretraining` / `cr+adabn@pretraining` are the plain / colour-randomised
# pretraining with BatchNorm statistics re-estimated on the unlabelled target frames and no training step (AdaBN
# as published), what target statistics alone add before any adaptation iteration
PRETRAINING_ROWS = ("cr@pretraining", "adabn@pretraining", "cr+adabn@pretraining")

ROW_METHOD = {"adabn": "source-only", "cr": "source-only"}  # rows that are a method plus a protocol choice


def colour_randomised(row: str) -> bool:
    return row == "cr" or row.startswith("cr+")


def mix_start(row: str) -> str | None:
    """The row a `+mix` row starts from (None: not a `+mix` row)."""
    return row.removesuffix("+mix") if row.endswith("+mix") else None


def row_method(row: str) -> str:
    """The `jal-train` method a row's second stage runs (a self-training or `+mix` row's: that of the row it
    starts from)."""
    if start := mix_start(row):
        return row_method(start)
    if "+ssl" in row:
        row = self_training_stages(row)[1]
    row = row if row == "cr" else row.removeprefix("cr+")
    return ROW_METHOD.get(row, row.split("+")[0])


def self_training_stages(row: str) -> tuple[str, str, int, bool, bool]:
    """A `...+ssl<k>` row as (its rounds' stem, the adapted row the rounds start from, k, spatial prior, flip):
    `cr+jal-wtm+sp+flip+ssl2` is round 2 from `cr+jal-wtm`, with spatial priors and flip-averaged pseudo labels
    (the other ROUND_OPTIONS: see `round_options`)."""
    stem, rounds = row.rsplit("+ssl", 1)
    options, found = _split_round_options(stem)
    adapted = options.removesuffix("+sp").removesuffix("+ens")
    return stem, adapted, int(rounds), options.endswith("+sp"), "+flip" in found


def _split_round_options(stem: str) -> tuple[str, tuple[str, ...]]:
    found = []
    while option := next((o for o in ROUND_OPTIONS if stem.endswith(o)), None):
        stem, found = stem.removesuffix(option), [option, *found]
    return stem, tuple(found)


def round_options(row: str) -> tuple[str, ...]:
    """The ROUND_OPTIONS of a self-training row, in its name's order (() for any other row)."""
    return _split_round_options(self_training_stages(row)[0])[1] if "+ssl" in row else ()


def first_round_stem(row: str) -> str:
    """The rounds folder stem whose round 1 is this self-training row's round 1: its stem without the options
    that change only later rounds (round 1 is then run once and shared)."""
    stem = self_training_stages(row)[0]
    base, options = _split_round_options(stem)
    return base + "".join(o for o in options if o not in LATER_ROUNDS)


def target_only(row: str) -> str | None:
    """How a self-training row's rounds train on the pseudo-labelled target images alone: `+tgt` (as they are),
    `+tgtcr` (colour-randomised), or None (beside the source stream)."""
    return next((o for o in round_options(row) if o in TARGET_ONLY), None)


def ensemble_partner(row: str) -> str | None:
    """The adapted row whose model joins a `+ens` row's own as a teacher of every round (None: not an ensemble row):
    the same method on the other pretraining route, with colour randomisation or without."""
    if "+ens" not in row:
        return None
    adapted = self_training_stages(row)[1]
    return adapted.removeprefix("cr+") if colour_randomised(adapted) else "cr+" + adapted
