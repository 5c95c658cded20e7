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
# `+rect`: the rounds' pseudo-label loss rectified by the student's two decoders (method.pseudo_rectify): each
# pixel weighted by exp(-KL(Dec2 || Dec1)), plus that KL; `+all+rect` on labels on every pixel, as published
# (Zheng & Yang 2021 let the rectification, not a threshold, discount the wrong labels)
RECTIFY_ROWS = ("cr+jal-wtm+sp+rect+ssl1", "cr+jal-wtm+sp+all+rect+ssl1")
# how the rounds label and train, after the stem's `+sp`
ROUND_OPTIONS = ("+flip", "+all", "+rect")
ADAPT_ROWS = ("adabn", "adaptsegnet", "jal", "wtm-dec1", "wtm-dec2", "wtm", "jal-wtm", *PIPELINE_ROWS, *ONEHOT_ROWS,
              *CR_ROWS, *COVERAGE_ROWS, *NO_ADVERSARIAL_SSL_ROWS, *RECTIFY_ROWS)
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


def row_method(row: str) -> str:
    """The `jal-train` method a row's second stage runs (a self-training row's: that of the row it starts from)."""
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
    adapted = options.removesuffix("+sp")
    return stem, adapted, int(rounds), options.endswith("+sp"), "+flip" in found


def _split_round_options(stem: str) -> tuple[str, tuple[str, ...]]:
    found = []
    while option := next((o for o in ROUND_OPTIONS if stem.endswith(o)), None):
        stem, found = stem.removesuffix(option), [option, *found]
    return stem, tuple(found)


def round_options(row: str) -> tuple[str, ...]:
    """The ROUND_OPTIONS of a self-training row, in its name's order (() for any other row)."""
    return _split_round_options(self_training_stages(row)[0])[1] if "+ssl" in row else ()
