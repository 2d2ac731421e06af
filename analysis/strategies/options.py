"""Options of the band-times-segments family: their defaults, their rules, their errors.

No torch and no librosa here: ``params.py`` checks every ``masks.presets`` entry with
:func:`resolve_options` before any stage works, and a change to how masks are drawn
(:mod:`analysis.strategies.band`, :mod:`analysis.strategies.perlin`) does not touch
the stages that only check options.
"""

from __future__ import annotations

import math
from typing import Any

DEFAULT_SPECTROGRAM_SHAPE = (128, 320)
# Projections onto a latent grid (analysis.strategies.projection); ``max_pool`` is the name
# earlier versions of this project used for ``any_cell``.
PROJECTIONS: tuple[str, ...] = ("any_cell", "nearest")
PROJECTION_ALIASES = {"max_pool": "any_cell"}

# Perlin lattices have 2**k cells per axis; k above this is finer than any mel axis here.
PERLIN_MAX_SCALE_EXP = 8
# The Perlin noise reaches at most 1 (never quite): a threshold of 1 would mask nothing.
PERLIN_THRESHOLD_RANGE = (-1.0, 1.0)  # [low, high)


class OptionError(ValueError):
    """A strategy option has an impossible value; ``option`` names it."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


class StrategyError(ValueError):
    """A strategy could not be built or returned something that is not a mask."""


def _check_range(name: str, lo, hi, floor, ceiling, open_low: bool = False) -> None:
    below = lo <= floor if open_low else lo < floor
    if below or hi > ceiling:
        low_text = f"({floor}" if open_low else f"[{floor}"
        raise OptionError(
            f"min_{name}" if below else f"max_{name}",
            f"min_{name}/max_{name} = {lo}/{hi} must lie in {low_text}, {ceiling}]",
        )
    if lo > hi:
        raise OptionError(f"min_{name}", f"min_{name} = {lo} is above max_{name} = {hi}")


# Options of the band-times-segments family, with the seed notebook's "current" behaviour as
# defaults. ``None`` for max_seg_len means T // 4; the band width mode is chosen by which of
# band_fraction / band_rows / band_hz is given (fraction when none is).
SEED_DEFAULTS: dict[str, Any] = {
    "min_band_fraction": 0.05,
    "max_band_fraction": 0.15,
    "min_segments": 10,
    "max_segments": 160,
    "min_seg_len": 1,
    "max_seg_len": None,
    "min_band_rows": None,
    "max_band_rows": None,
    "min_band_hz": None,
    "max_band_hz": None,
    "min_bands": 1,
    "max_bands": 1,
    "min_band_position": 0.0,
    "max_band_position": 1.0,
    "full_time_prob": 0.0,
    "min_full_coverage": 0.85,
    "max_full_coverage": 1.0,
    "disjoint_segments": False,
    "perlin_prob": 0.0,
    "perlin_min_scale_exp": 0,
    "perlin_max_scale_exp": 6,
    "perlin_threshold": 0.5,
    "perlin_rotate": True,
    "fmin_hz": 0.0,
    "fmax_hz": 8000.0,
}
OPTION_NAMES: tuple[str, ...] = tuple(SEED_DEFAULTS)
# A minimum that the caller did not give follows a smaller maximum that it did give, so
# ``max_segments=5`` alone means 5 at most rather than an error about the default minimum.
_MIN_FOLLOWS_MAX = {
    "min_band_fraction": "max_band_fraction",
    "min_segments": "max_segments",
    "min_seg_len": "max_seg_len",
    "min_bands": "max_bands",
}


def resolve_options(
    given: dict[str, Any], defaults: dict[str, Any], n_mels: int, T: int
) -> dict[str, Any]:
    """Merge ``given`` options over ``defaults`` and check them; raise ValueError naming the option.

    Used by the strategy classes and by the params check (so a preset fails
    before any stage works), so the rules live in one place.
    """
    unknown = sorted(set(given) - set(OPTION_NAMES))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(OPTION_NAMES)}")
    o = {**defaults, **{k: v for k, v in given.items() if v is not None}}
    if o["max_seg_len"] is None:
        o["max_seg_len"] = max(1, T // 4)
    for lo, hi in _MIN_FOLLOWS_MAX.items():
        if lo not in given and hi in given and o[lo] > o[hi]:
            o[lo] = o[hi]
    if (o["min_band_rows"] is None) != (o["max_band_rows"] is None):
        raise OptionError("min_band_rows", "min_band_rows and max_band_rows go together")
    if (o["min_band_hz"] is None) != (o["max_band_hz"] is None):
        raise OptionError("min_band_hz", "min_band_hz and max_band_hz go together")
    if o["min_band_rows"] is not None and o["min_band_hz"] is not None:
        raise OptionError("min_band_hz", "give band widths in rows or in Hz, not both")
    _check_range("band_fraction", o["min_band_fraction"], o["max_band_fraction"], 0.0, 1.0, True)
    if o["min_band_rows"] is not None:
        _check_range("band_rows", o["min_band_rows"], o["max_band_rows"], 1, n_mels)
    if o["min_band_hz"] is not None:
        _check_range("band_hz", o["min_band_hz"], o["max_band_hz"], 0.0, math.inf, True)
    _check_range("bands", o["min_bands"], o["max_bands"], 1, max(1, n_mels // 2))
    _check_range("segments", o["min_segments"], o["max_segments"], 1, math.inf)
    _check_range("seg_len", o["min_seg_len"], o["max_seg_len"], 1, T)
    _check_range("band_position", o["min_band_position"], o["max_band_position"], 0.0, 1.0)
    if o["min_band_position"] == o["max_band_position"]:
        raise OptionError("min_band_position", "min_band_position must be below max_band_position")
    _check_range("full_coverage", o["min_full_coverage"], o["max_full_coverage"], 0.0, 1.0, True)
    for name in ("full_time_prob", "perlin_prob"):
        if not 0.0 <= o[name] <= 1.0:
            raise OptionError(name, f"{name} = {o[name]} must lie in [0, 1]")
    if o["disjoint_segments"] and o["min_segments"] * (o["min_seg_len"] + 1) - 1 > T:
        raise OptionError(
            "min_segments",
            f"min_segments = {o['min_segments']} disjoint segments of min_seg_len = "
            f"{o['min_seg_len']} frames cannot fit in T = {T} frames",
        )
    _check_range(
        "perlin_scale_exp",
        o["perlin_min_scale_exp"],
        o["perlin_max_scale_exp"],
        0,
        PERLIN_MAX_SCALE_EXP,
    )
    low, high = PERLIN_THRESHOLD_RANGE
    if not low <= o["perlin_threshold"] < high:
        raise OptionError(
            "perlin_threshold",
            f"perlin_threshold = {o['perlin_threshold']} must lie in [{low:g}, {high:g})",
        )
    if o["fmin_hz"] >= o["fmax_hz"]:
        raise ValueError(f"fmin_hz = {o['fmin_hz']} must be below fmax_hz = {o['fmax_hz']}")
    return o


FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {"audio_specific": SEED_DEFAULTS}
FAMILY_KIND_NAMES: tuple[str, ...] = tuple(FAMILY_DEFAULTS)


def family_defaults(kind: str, T: int) -> dict[str, Any]:
    """The default options of a family ``kind`` (``audio_specific``: the seed notebook's
    "current" preset; ``max_seg_len`` None means T // 4)."""
    return FAMILY_DEFAULTS[kind]


def resolve_family(kind: str, n_mels: int, T: int, **given: Any) -> dict[str, Any]:
    """The checked options a strategy of family ``kind`` would use for (n_mels, T).

    ``max_band_frac`` is the training code's band (1..int(n_mels * frac) rows).
    Raises ValueError or TypeError naming the option. Needs no torch, so
    ``params.yaml`` presets are checked with it before any stage works.
    """
    given = {k: v for k, v in given.items() if v is not None}
    frac = given.pop("max_band_frac", None)
    if frac is not None:  # the training code's band: 1..int(n_mels * frac) rows
        given.update(min_band_rows=1, max_band_rows=max(1, int(n_mels * float(frac))))
    return resolve_options(given, family_defaults(kind, T), n_mels, T)


# Today's training strategy (analysis.strategies.training): its options and their rules.
FULL_COVERAGE = (0.85, 1.0)  # the full-clip segment's share of the clip
PLACEMENT_TRIES = 400  # tries per segment before the placement ends
TRAINING_OPTIONS: dict[str, Any] = {
    "perlin_prob": 0.0,
    "full_time_prob": 0.3,
    "max_band_frac": 0.1,
    "max_segments": 5,
}


def check_training_options(n_mels: int, T: int, **options: Any) -> dict[str, Any]:
    """The training strategy's options over its defaults; raises ``OptionError`` naming one."""
    unknown = sorted(set(options) - set(TRAINING_OPTIONS))
    if unknown:
        raise TypeError(
            f"unknown option(s) {', '.join(unknown)}; known: {', '.join(TRAINING_OPTIONS)}"
        )
    o = {**TRAINING_OPTIONS, **{k: v for k, v in options.items() if v is not None}}
    for name in ("perlin_prob", "full_time_prob"):
        if not 0.0 <= o[name] <= 1.0:
            raise OptionError(name, f"{name} = {o[name]} must lie in [0, 1]")
    if not 0.0 < o["max_band_frac"] <= 1.0:
        raise OptionError(
            "max_band_frac", f"max_band_frac = {o['max_band_frac']} must lie in (0, 1]"
        )
    if int(o["max_segments"]) != o["max_segments"] or o["max_segments"] < 2:
        raise OptionError("max_segments", f"max_segments = {o['max_segments']} must be 2 or more")
    if T // 10 < 1:
        raise OptionError("max_segments", f"T = {T} frames is too short for segments of T // 10")
    return o


# The training code's Perlin mode (analysis.strategies.perlin.TrainingPerlinStrategy): lattice
# exponents drawn inclusive, threshold drawn uniform. Its stand-alone Perlin strategy uses
# exponents 0..6 and a threshold of 0.5.
DSR_PERLIN_DEFAULTS: dict[str, Any] = {
    "min_scale_exp": 1,
    "max_scale_exp": 5,
    "min_threshold": 0.3,
    "max_threshold": 0.6,
}
