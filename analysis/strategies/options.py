"""Settings of every strategy kind: their defaults, their allowed values and their rules.

No torch and no librosa here: the strategies check their settings with these functions when
they are built, and the params check (:mod:`analysis.strategies.presets`) checks every
``masks.presets`` entry with the same functions before any mask is drawn. Every bad setting
raises :class:`~analysis.strategies.errors.StrategySettingError` naming it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.strategies.errors import StrategySettingError, UnknownSettingError

DEFAULT_SPECTROGRAM_SHAPE = (128, 320)
# Projections onto a latent grid (analysis.strategies.projection); ``max_pool`` is the name
# earlier versions of this project used for ``any_cell``.
PROJECTIONS: tuple[str, ...] = ("any_cell", "nearest")
PROJECTION_ALIASES = {"max_pool": "any_cell"}

# Perlin lattices have 2**k cells per axis; k above this is finer than any mel axis here.
PERLIN_MAX_SCALE_EXP = 8
# The Perlin noise reaches at most 1 (never quite): a threshold of 1 would mask nothing.
PERLIN_THRESHOLD_RANGE = (-1.0, 1.0)  # [low, high)


@dataclass(frozen=True)
class Setting:
    """One setting's type (``int``, ``float`` or ``bool``) and range (bounds inclusive unless
    open)."""

    kind: type
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def allowed(self) -> str:
        """What the setting may be, in words (``an integer in [1, 8]``)."""
        if self.kind is bool:
            return "true or false"
        noun = "an integer" if self.kind is int else "a number"
        if self.lo is None and self.hi is None:
            return noun
        if self.hi is None:
            return f"{noun} {'>' if self.lo_open else '>='} {self.lo:g}"
        if self.lo is None:
            return f"{noun} {'<' if self.hi_open else '<='} {self.hi:g}"
        left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
        return f"{noun} in {left}{self.lo:g}, {self.hi:g}{right}"

    def check(self, key: str, value: Any) -> Any:
        """``value`` if it is allowed, else a StrategySettingError naming ``key``."""
        is_bool = isinstance(value, bool) or type(value).__name__ == "bool_"  # numpy's too
        if self.kind is bool:
            ok = is_bool
        else:
            number = numbers.Integral if self.kind is int else numbers.Real
            ok = isinstance(value, number) and not is_bool and math.isfinite(value)
            if ok and self.lo is not None:
                ok = value > self.lo if self.lo_open else value >= self.lo
            if ok and self.hi is not None:
                ok = value < self.hi if self.hi_open else value <= self.hi
        if not ok:
            raise StrategySettingError(key, self.allowed(), value)
        return value


def check_settings(spec: Mapping[str, Setting], given: Mapping[str, Any]) -> dict[str, Any]:
    """The ``given`` settings that are not None, each checked against ``spec``."""
    unknown = sorted(set(given) - set(spec))
    if unknown:
        raise UnknownSettingError(unknown, tuple(spec))
    return {k: spec[k].check(k, v) for k, v in given.items() if v is not None}


def _check_range(name: str, lo, hi, floor, ceiling, open_low: bool = False) -> None:
    below = lo <= floor if open_low else lo < floor
    if below or hi > ceiling:
        low_text = f"({floor}" if open_low else f"[{floor}"
        key = f"min_{name}" if below else f"max_{name}"
        raise StrategySettingError(
            key,
            f"in {low_text}, {ceiling}]",
            message=f"min_{name}/max_{name} = {lo}/{hi} must lie in {low_text}, {ceiling}]",
        )
    if lo > hi:
        raise StrategySettingError(
            f"min_{name}",
            f"at most max_{name}",
            message=f"min_{name} = {lo} is above max_{name} = {hi}",
        )


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
_COUNT = Setting(int, 1)
_FRACTION = Setting(float, 0.0, 1.0, lo_open=True)
_PROBABILITY = Setting(float, 0.0, 1.0)
_PERLIN_SCALE_EXP = Setting(int, 0, PERLIN_MAX_SCALE_EXP)
_PERLIN_THRESHOLD = Setting(float, *PERLIN_THRESHOLD_RANGE, hi_open=True)
# What each option of the family may be on its own; the rules between options (min <= max,
# rows within n_mels, ...) are in resolve_options.
FAMILY_SETTINGS: dict[str, Setting] = {
    "min_band_fraction": _FRACTION,
    "max_band_fraction": _FRACTION,
    "min_segments": _COUNT,
    "max_segments": _COUNT,
    "min_seg_len": _COUNT,
    "max_seg_len": _COUNT,
    "min_band_rows": _COUNT,
    "max_band_rows": _COUNT,
    "min_band_hz": Setting(float, 0.0, lo_open=True),
    "max_band_hz": Setting(float, 0.0, lo_open=True),
    "min_bands": _COUNT,
    "max_bands": _COUNT,
    "min_band_position": Setting(float, 0.0, 1.0),
    "max_band_position": Setting(float, 0.0, 1.0),
    "full_time_prob": _PROBABILITY,
    "min_full_coverage": _FRACTION,
    "max_full_coverage": _FRACTION,
    "disjoint_segments": Setting(bool),
    "perlin_prob": _PROBABILITY,
    "perlin_min_scale_exp": _PERLIN_SCALE_EXP,
    "perlin_max_scale_exp": _PERLIN_SCALE_EXP,
    "perlin_threshold": _PERLIN_THRESHOLD,
    "perlin_rotate": Setting(bool),
    "fmin_hz": Setting(float, 0.0),
    "fmax_hz": Setting(float, 0.0, lo_open=True),
}
# The training code's name for the band: 1..int(n_mels * max_band_frac) rows.
MAX_BAND_FRAC = _FRACTION
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
    """Merge ``given`` options over ``defaults`` and check them; raise StrategySettingError
    naming the option.

    Used by the strategy classes and by the params check (so a preset fails
    before any stage works), so the rules live in one place.
    """
    o = {**defaults, **check_settings(FAMILY_SETTINGS, given)}
    if o["max_seg_len"] is None:
        o["max_seg_len"] = max(1, T // 4)
    for lo, hi in _MIN_FOLLOWS_MAX.items():
        if lo not in given and hi in given and o[lo] > o[hi]:
            o[lo] = o[hi]
    for unit in ("rows", "hz"):
        if (o[f"min_band_{unit}"] is None) != (o[f"max_band_{unit}"] is None):
            raise StrategySettingError(
                f"min_band_{unit}",
                f"given together with max_band_{unit}",
                message=f"min_band_{unit} and max_band_{unit} go together",
            )
    if o["min_band_rows"] is not None and o["min_band_hz"] is not None:
        raise StrategySettingError(
            "min_band_hz",
            "absent when band widths are given in rows",
            message="give band widths in rows or in Hz, not both",
        )
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
        raise StrategySettingError(
            "min_band_position", "below max_band_position", o["min_band_position"]
        )
    _check_range("full_coverage", o["min_full_coverage"], o["max_full_coverage"], 0.0, 1.0, True)
    if o["disjoint_segments"] and o["min_segments"] * (o["min_seg_len"] + 1) - 1 > T:
        raise StrategySettingError(
            "min_segments",
            f"few enough for disjoint segments of min_seg_len frames to fit in T = {T} frames",
            message=f"min_segments = {o['min_segments']} disjoint segments of min_seg_len = "
            f"{o['min_seg_len']} frames cannot fit in T = {T} frames",
        )
    _check_range(
        "perlin_scale_exp",
        o["perlin_min_scale_exp"],
        o["perlin_max_scale_exp"],
        0,
        PERLIN_MAX_SCALE_EXP,
    )
    if o["fmin_hz"] >= o["fmax_hz"]:
        raise StrategySettingError("fmin_hz", f"below fmax_hz = {o['fmax_hz']}", o["fmin_hz"])
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
    Raises StrategySettingError naming the option. Needs no torch, so
    ``params.yaml`` presets are checked with it before any stage works.
    """
    given = {k: v for k, v in given.items() if v is not None}
    frac = given.pop("max_band_frac", None)
    if frac is not None:  # the training code's band: 1..int(n_mels * frac) rows
        MAX_BAND_FRAC.check("max_band_frac", frac)
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
TRAINING_SETTINGS: dict[str, Setting] = {
    "perlin_prob": _PROBABILITY,
    "full_time_prob": _PROBABILITY,
    "max_band_frac": MAX_BAND_FRAC,
    "max_segments": Setting(int, 2),
}


def check_training_options(n_mels: int, T: int, **options: Any) -> dict[str, Any]:
    """The training strategy's options over its defaults; raises StrategySettingError naming one."""
    o = {**TRAINING_OPTIONS, **check_settings(TRAINING_SETTINGS, options)}
    if T // 10 < 1:
        raise StrategySettingError(
            "max_segments", "used with T >= 10 frames (segments of T // 10 to T // 3 frames)", T
        )
    return o


# The training code's Perlin mode (analysis.strategies.perlin.TrainingPerlinStrategy): lattice
# exponents drawn inclusive, threshold drawn uniform. Its stand-alone Perlin strategy uses
# exponents 0..6 and a threshold of 0.5.
DSR_PERLIN_DEFAULTS: dict[str, Any] = {
    "min_scale_exp": 1,
    "max_scale_exp": 5,
    "min_threshold": 0.3,
    "max_threshold": 0.6,
    "rotate": True,
}
DSR_PERLIN_SETTINGS: dict[str, Setting] = {
    "min_scale_exp": _PERLIN_SCALE_EXP,
    "max_scale_exp": _PERLIN_SCALE_EXP,
    "min_threshold": _PERLIN_THRESHOLD,
    "max_threshold": _PERLIN_THRESHOLD,
    "rotate": Setting(bool),
}
PERLIN_DEFAULTS: dict[str, Any] = {
    "min_scale_exp": 0,
    "max_scale_exp": 6,
    "threshold": 0.5,
    "rotate": True,
}
PERLIN_SETTINGS: dict[str, Setting] = {
    "min_scale_exp": _PERLIN_SCALE_EXP,
    "max_scale_exp": _PERLIN_SCALE_EXP,
    "threshold": _PERLIN_THRESHOLD,
    "rotate": Setting(bool),
}


def check_perlin_options(**options: Any) -> dict[str, Any]:
    """The stand-alone Perlin strategy's options over its defaults (StrategySettingError)."""
    o = {**PERLIN_DEFAULTS, **check_settings(PERLIN_SETTINGS, options)}
    _check_range("scale_exp", o["min_scale_exp"], o["max_scale_exp"], 0, PERLIN_MAX_SCALE_EXP)
    return o


def check_dsr_perlin_options(**options: Any) -> dict[str, Any]:
    """The training code's Perlin mode's options over its defaults (StrategySettingError)."""
    o = {**DSR_PERLIN_DEFAULTS, **check_settings(DSR_PERLIN_SETTINGS, options)}
    _check_range("scale_exp", o["min_scale_exp"], o["max_scale_exp"], 0, PERLIN_MAX_SCALE_EXP)
    if o["min_threshold"] > o["max_threshold"]:
        raise StrategySettingError(
            "min_threshold", f"at most max_threshold = {o['max_threshold']}", o["min_threshold"]
        )
    return o


def check_python_options(
    target: Any, kwargs: Any = None, path: Any = None
) -> tuple[str, dict[str, Any], str | None]:
    """A ``kind: python`` preset's ``target``, ``kwargs`` and ``path``, checked (not imported)."""
    module, _, attr = target.partition(":") if isinstance(target, str) else ("", "", "")
    if not module or not attr:
        raise StrategySettingError("target", "a text like 'module.path:Name'", target)
    if kwargs is not None and (
        not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs)
    ):
        raise StrategySettingError("kwargs", "a mapping of keyword arguments", kwargs)
    if path is not None and not (isinstance(path, str | Path) and Path(path).is_dir()):
        raise StrategySettingError("path", "a folder", path)
    return target, dict(kwargs or {}), path


def check_mixture_components(components: Any) -> list[dict[str, Any]]:
    """A mixture's ``components`` (``[{"weight", "fitted"}]``): at least one, weights >= 0 and
    not all 0."""
    if not isinstance(components, list | tuple) or not components:
        raise StrategySettingError("components", "a list of at least one component", components)
    weight = Setting(float, 0.0)
    for c in components:
        if not isinstance(c, Mapping) or set(c) < {"weight", "fitted"}:
            raise StrategySettingError("components", "items with 'weight' and 'fitted'", c)
        weight.check("weight", c["weight"])
    if sum(float(c["weight"]) for c in components) <= 0:
        raise StrategySettingError(
            "weight", "not 0 for every component", [c["weight"] for c in components]
        )
    return list(components)
