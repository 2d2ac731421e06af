"""Load and validate ``params.yaml`` before any stage does work.

Every stage calls :func:`load_params`. The whole file is checked against one
declarative spec (unknown keys, types, ranges) and a few cross-key rules
(``fmax <= sr / 2``, ``min <= max``), and the first problem stops the run with
a :class:`ParamsError` naming the dotted key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from analysis.strategies.options import (
    DSR_PERLIN_DEFAULTS,
    FAMILY_KIND_NAMES,
    PERLIN_MAX_SCALE_EXP,
    PERLIN_THRESHOLD_RANGE,
    PROJECTIONS,
    OptionError,
    check_training_options,
    resolve_family,
)

MACHINE_TYPES: tuple[str, ...] = ("fan", "pump", "slider", "valve", "ToyCar", "ToyConveyor")
PRESET_KINDS: tuple[str, ...] = (
    *FAMILY_KIND_NAMES,
    "training_audio",
    "perlin",
    "dsr_perlin",
    "python",
)
NORMALIZATIONS: tuple[str, ...] = ("train_per_bin", "per_clip", "none")
REPORT_ENGINES: tuple[str, ...] = ("auto", "quarto", "pandoc")
REPORT_FORMATS: tuple[str, ...] = ("html", "pdf")


TITLE_MAX_CHARS = 200  # report.title and report.author
RESERVED_PRESET_NAMES = ("recommended", "fitted", "noise_level")  # fitted setting; yardstick


class ParamsError(ValueError):
    """A params.yaml key is missing, unknown or has an impossible value."""


@dataclass(frozen=True)
class Num:
    """A number leaf: ``kind`` int or float, inclusive/exclusive bounds."""

    kind: type
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def check(self, key: str, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamsError(f"{key}: expected {self.kind.__name__}, got {value!r}")
        if self.kind is int and not isinstance(value, int):
            raise ParamsError(f"{key}: expected an integer, got {value!r}")
        if not math.isfinite(value):
            raise ParamsError(f"{key}: must be finite, got {value!r}")
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            raise ParamsError(
                f"{key}: must be {'>' if self.lo_open else '>='} {self.lo}, got {value}"
            )
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            raise ParamsError(
                f"{key}: must be {'<' if self.hi_open else '<='} {self.hi}, got {value}"
            )
        return self.kind(value)


@dataclass(frozen=True)
class Text:
    choices: tuple[str, ...] | None = None
    max_len: int | None = None

    def check(self, key: str, value: Any) -> Any:
        if not isinstance(value, str) or not value:
            raise ParamsError(f"{key}: expected a non-empty string, got {value!r}")
        if self.max_len is not None and len(value) > self.max_len:
            raise ParamsError(
                f"{key}: {len(value)} characters; at most {self.max_len} (it is printed on the "
                "report's first page)"
            )
        if self.choices is not None and value not in self.choices:
            raise ParamsError(f"{key}: {value!r} is not one of {', '.join(self.choices)}")
        return value


@dataclass(frozen=True)
class Flag:
    def check(self, key: str, value: Any) -> Any:
        if not isinstance(value, bool):
            raise ParamsError(f"{key}: expected true or false, got {value!r}")
        return value


@dataclass(frozen=True)
class ListOf:
    item: Any
    min_len: int = 1

    def check(self, key: str, value: Any) -> Any:
        if not isinstance(value, list) or len(value) < self.min_len:
            raise ParamsError(f"{key}: expected a list of at least {self.min_len} item(s)")
        out = [self.item.check(f"{key}[{i}]", v) for i, v in enumerate(value)]
        if len(set(out)) != len(out):
            raise ParamsError(f"{key}: items must be unique, got {value!r}")
        return out


def _positive_int(hi: float | None = None) -> Num:
    return Num(int, 1, hi)


FRACTION = Num(float, 0.0, 1.0, lo_open=True)
# The Perlin noise is scaled to reach at most 1 (never quite): a threshold of 1 masks nothing.
PERLIN_THRESHOLD = Num(float, *PERLIN_THRESHOLD_RANGE, hi_open=True)
PERLIN_SCALE_EXP = Num(int, 0, PERLIN_MAX_SCALE_EXP)
N_JOBS = Num(int, 0, 512)

# Every option of the band-times-segments family is optional: ``audio_specific`` fills in the
# seed notebook's defaults (analysis.strategies.options).
FAMILY_PRESET: dict[str, Any] = {"kind": Text(PRESET_KINDS)}
FAMILY_OPTIONAL: dict[str, Any] = {
    "min_band_fraction": FRACTION,
    "max_band_fraction": FRACTION,
    "max_band_frac": FRACTION,
    "min_band_rows": _positive_int(),
    "max_band_rows": _positive_int(),
    "min_band_hz": Num(float, 0.0, lo_open=True),
    "max_band_hz": Num(float, 0.0, lo_open=True),
    "min_bands": _positive_int(),
    "max_bands": _positive_int(),
    "min_band_position": Num(float, 0.0, 1.0),
    "max_band_position": Num(float, 0.0, 1.0),
    "min_segments": _positive_int(),
    "max_segments": _positive_int(),
    "min_seg_len": _positive_int(),
    "max_seg_len": _positive_int(),
    "disjoint_segments": Flag(),
    "full_time_prob": Num(float, 0.0, 1.0),
    "min_full_coverage": FRACTION,
    "max_full_coverage": FRACTION,
    "perlin_prob": Num(float, 0.0, 1.0),
    "perlin_min_scale_exp": PERLIN_SCALE_EXP,
    "perlin_max_scale_exp": PERLIN_SCALE_EXP,
    "perlin_threshold": PERLIN_THRESHOLD,
    "perlin_rotate": Flag(),
}
PYTHON_PRESET: dict[str, Any] = {"kind": Text(PRESET_KINDS), "target": Text()}
PYTHON_OPTIONAL: dict[str, Any] = {"kwargs": "kwargs", "path": Text()}
PERLIN_PRESET: dict[str, Any] = {
    "kind": Text(PRESET_KINDS),
    "min_scale_exp": PERLIN_SCALE_EXP,
    "max_scale_exp": PERLIN_SCALE_EXP,
    "threshold": PERLIN_THRESHOLD,
    "rotate": Flag(),
}
# The training code's strategy and its Perlin mode: only the options it has, all optional.
TRAINING_OPTIONAL: dict[str, Any] = {
    "perlin_prob": Num(float, 0.0, 1.0),
    "full_time_prob": Num(float, 0.0, 1.0),
    "max_band_frac": FRACTION,
    "max_segments": Num(int, 2),
}
DSR_PERLIN_OPTIONAL: dict[str, Any] = {
    "min_scale_exp": PERLIN_SCALE_EXP,
    "max_scale_exp": PERLIN_SCALE_EXP,
    "min_threshold": PERLIN_THRESHOLD,
    "max_threshold": PERLIN_THRESHOLD,
    "rotate": Flag(),
}
KIND_SPECS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "audio_specific": (FAMILY_PRESET, FAMILY_OPTIONAL),
    "training_audio": (FAMILY_PRESET, TRAINING_OPTIONAL),
    "perlin": (PERLIN_PRESET, {}),
    "dsr_perlin": (FAMILY_PRESET, DSR_PERLIN_OPTIONAL),
    "python": (PYTHON_PRESET, PYTHON_OPTIONAL),
}

SPEC: dict[str, Any] = {
    "data": {
        "root": Text(),
        "machine_types": ListOf(Text(MACHINE_TYPES)),
    },
    "synthetic": {
        "seed": Num(int, 0),
        "ids_per_type": _positive_int(4),
        "train_clips_per_id": _positive_int(),
        "test_normal_clips_per_id": _positive_int(),
        "test_anomaly_clips_per_id": _positive_int(),
        "strength": Num(float, 0.0, 10.0, lo_open=True),
        "n_jobs": N_JOBS,
    },
    "features": {
        "sr": Num(int, 1000, 192000),
        "n_fft": Num(int, 16, 65536),
        "hop_length": _positive_int(),
        "n_mels": Num(int, 8, 1024),
        "fmin": Num(float, 0.0),
        "fmax": Num(float, 0.0, lo_open=True),
        "power": Num(float, 0.0, 4.0, lo_open=True),
        "top_db": Num(float, 0.0, 200.0, lo_open=True),
        "target_T": Num(int, 8, 100000),
        "min_duration_s": Num(float, 0.0, lo_open=True),
        "normalization": Text(NORMALIZATIONS),
        "n_jobs": N_JOBS,
    },
    "localization": {
        "clip_false_region_rate": Num(float, 0.0, 0.5, lo_open=True),
        "region_cell_rate": Num(float, 0.0, 0.5, lo_open=True),
        "id_level_alpha": Num(float, 0.0, 0.5, lo_open=True),
        "n_permutations": Num(int, 19, 100000),
        "n_folds": Num(int, 2, 100),
        "smooth_bins": _positive_int(64),
        "smooth_frames": _positive_int(256),
        "window_frames": _positive_int(100000),
        "merge_gap_frames": Num(int, 0, 100000),
        "min_region_cells": _positive_int(),
        "min_normal_clips": Num(int, 4),
        "n_jobs": N_JOBS,
    },
    "power": {
        "seed": Num(int, 0),
        "deltas": ListOf(Num(float, 0.0, 100.0, lo_open=True)),
        "n_jobs": N_JOBS,
    },
    "masks": {
        "seed": Num(int, 0),
        "n_masks": Num(int, 10),
        "n_samples": _positive_int(64),
        "q_grids": "q_grids",
        "resize_methods": ListOf(Text(PROJECTIONS)),
        "presets": "presets",
        "n_jobs": N_JOBS,
    },
    "recommend": {
        "seed": Num(int, 0),
        "fit_fraction": Num(float, 0.1, 0.9),
        "min_anomaly_clips": Num(int, 2),
        "min_region_share": Num(float, 0.0, 1.0),
        "n_masks_per_candidate": Num(int, 16),
        "n_search_candidates": Num(int, 1),
        "n_refine_rounds": Num(int, 0, 50),
        "n_bootstrap": Num(int, 10),
        "ci_level": Num(float, 0.5, 0.999),
        "user_setting": Text(),
        "n_splits": Num(int, 1, 100),
        "n_jobs": N_JOBS,
    },
    "figures": {
        "dpi": Num(int, 50, 600),
        "n_mask_samples": _positive_int(12),
        "cmap_spectrogram": Text(),
        "cmap_deviation": Text(),
        "n_jobs": N_JOBS,
    },
    "downstream": {
        "enabled": Flag(),
        "presets": ListOf(Text()),
        "seeds": Num(int, 1, 100),
        "seed": Num(int, 0),
        "perturbation": Text(("shifted_copy", "additive")),
        "additive_sd": ListOf(Num(float, 0.0, 100.0, lo_open=True)),
        "max_shift_bins": _positive_int(64),
        "steps": _positive_int(100000),
        "batch_size": _positive_int(1024),
        "learning_rate": Num(float, 0.0, 1.0, lo_open=True),
        "channels": Num(int, 4, 256),
        "score_quantile": Num(float, 0.5, 1.0),
        "max_train_clips_per_id": _positive_int(),
        "baseline_epochs": _positive_int(1000),
        "n_bootstrap": Num(int, 10),
        "ci_level": Num(float, 0.5, 0.999),
        "n_jobs": N_JOBS,
    },
    "report": {
        "title": Text(max_len=TITLE_MAX_CHARS),
        "author": Text(max_len=TITLE_MAX_CHARS),
        "engine": Text(REPORT_ENGINES),
        "formats": ListOf(Text(REPORT_FORMATS)),
    },
}


def _check_mapping(key: str, value: Any, spec: Mapping[str, Any], optional=None) -> dict:
    if not isinstance(value, Mapping):
        raise ParamsError(f"{key + ': ' if key else ''}expected a mapping of keys")
    optional = optional or {}
    prefix = f"{key}." if key else ""
    for name in value:
        if name not in spec and name not in optional:
            known = ", ".join(sorted([*spec, *optional]))
            raise ParamsError(f"{prefix}{name}: unknown key (known here: {known})")
    out: dict[str, Any] = {}
    for name, leaf in spec.items():
        if name not in value:
            raise ParamsError(f"{prefix}{name}: missing")
        out[name] = _check_value(f"{prefix}{name}", value[name], leaf)
    for name, leaf in optional.items():
        if name in value:
            out[name] = _check_value(f"{prefix}{name}", value[name], leaf)
    return out


def _check_value(key: str, value: Any, leaf: Any) -> Any:
    if isinstance(leaf, Mapping):
        return _check_mapping(key, value, leaf)
    if leaf == "q_grids":
        return _check_q_grids(key, value)
    if leaf == "presets":
        return _check_presets(key, value)
    if leaf == "kwargs":
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ParamsError(f"{key}: expected a mapping of keyword arguments")
        return dict(value)
    return leaf.check(key, value)


def _check_q_grids(key: str, value: Any) -> dict[str, int]:
    if not isinstance(value, Mapping) or not value:
        raise ParamsError(f"{key}: expected a mapping of grid name to downsampling factor")
    return {str(name): _positive_int(64).check(f"{key}.{name}", f) for name, f in value.items()}


def _check_presets(key: str, value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, Mapping) or not value:
        raise ParamsError(f"{key}: expected at least one named preset")
    out = {}
    for name, preset in value.items():
        pkey = f"{key}.{name}"
        if not isinstance(name, str) or not name.replace("_", "").isalnum():
            raise ParamsError(f"{pkey}: preset names use letters, digits and underscores")
        if name in RESERVED_PRESET_NAMES:
            raise ParamsError(
                f"{pkey}: {name!r} names a column of its own in the results; rename it"
            )
        if not isinstance(preset, Mapping) or "kind" not in preset:
            raise ParamsError(f"{pkey}.kind: missing (one of {', '.join(PRESET_KINDS)})")
        kind = Text(PRESET_KINDS).check(f"{pkey}.kind", preset["kind"])
        out[name] = _check_mapping(pkey, preset, *KIND_SPECS[kind])
        if kind == "python":
            target = out[name]["target"]
            module, _, attr = target.partition(":")
            if not module or not attr:
                raise ParamsError(f"{pkey}.target: {target!r} must look like 'module.path:Name'")
            if "path" in out[name] and not Path(out[name]["path"]).is_dir():
                raise ParamsError(f"{pkey}.path: {out[name]['path']!r} is not a folder")
    return out


def require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ParamsError(f"{key}: {message}")


def _check_min_max(params: dict, group: str, lo: str, hi: str) -> None:
    g = params[group]
    require(g[lo] <= g[hi], f"{group}.{lo}", f"{g[lo]} is above {group}.{hi} = {g[hi]}")


def _cross_checks(p: dict) -> None:
    f = p["features"]
    require(f["fmax"] <= f["sr"] / 2, "features.fmax", f"{f['fmax']} is above sr/2 = {f['sr'] / 2}")
    require(f["fmin"] < f["fmax"], "features.fmin", f"{f['fmin']} must be below fmax")
    require(f["hop_length"] <= f["n_fft"], "features.hop_length", "must not exceed n_fft")
    loc = p["localization"]
    # Three time scales, Bonferroni: the smallest p-value is 3 / (n_permutations + 1).
    require(
        3 / (loc["n_permutations"] + 1) < loc["id_level_alpha"],
        "localization.n_permutations",
        f"{loc['n_permutations']} permutations cannot reach p < id_level_alpha = "
        f"{loc['id_level_alpha']} (need more than {3 / loc['id_level_alpha'] - 1:.0f})",
    )
    n_mels, T = f["n_mels"], f["target_T"]
    for grid, factor in p["masks"]["q_grids"].items():
        require(
            factor <= min(n_mels, T),
            f"masks.q_grids.{grid}",
            f"factor {factor} leaves an empty grid for {n_mels} x {T}",
        )
    for name, preset in p["masks"]["presets"].items():
        key = f"masks.presets.{name}"
        if preset["kind"] in FAMILY_KIND_NAMES:
            options = {k: v for k, v in preset.items() if k != "kind"}
            try:
                resolve_family(
                    preset["kind"], n_mels, T, **options, fmin_hz=f["fmin"], fmax_hz=f["fmax"]
                )
            except OptionError as err:
                raise ParamsError(f"{key}.{err.option}: {err}") from None
            except (TypeError, ValueError) as err:
                raise ParamsError(f"{key}: {err}") from None
        elif preset["kind"] == "training_audio":
            try:
                check_training_options(
                    n_mels, T, **{k: v for k, v in preset.items() if k != "kind"}
                )
            except OptionError as err:
                raise ParamsError(f"{key}.{err.option}: {err}") from None
        elif preset["kind"] == "perlin":
            _check_min_max({key: preset}, key, "min_scale_exp", "max_scale_exp")
        elif preset["kind"] == "dsr_perlin":
            for lo, hi in (("min_scale_exp", "max_scale_exp"), ("min_threshold", "max_threshold")):
                low = preset.get(lo, DSR_PERLIN_DEFAULTS[lo])
                high = preset.get(hi, DSR_PERLIN_DEFAULTS[hi])
                require(low <= high, f"{key}.{lo}", f"{low} is above {key}.{hi} = {high}")
    require(
        p["recommend"]["user_setting"] in p["masks"]["presets"],
        "recommend.user_setting",
        f"{p['recommend']['user_setting']!r} is not a preset in masks.presets (name the setting "
        "your training code runs, as a preset)",
    )
    down = p["downstream"]
    for name in down["presets"]:
        require(
            name == "fitted" or name in p["masks"]["presets"],
            "downstream.presets",
            f"{name!r} is neither 'fitted' nor a preset in masks.presets",
        )
    require(
        "training_today" in down["presets"],
        "downstream.presets",
        "must include training_today (every setting is compared with it)",
    )
    require(
        len(down["additive_sd"]) == 2 and down["additive_sd"][0] <= down["additive_sd"][1],
        "downstream.additive_sd",
        "must be [low, high] with low <= high",
    )


def validate_params(raw: Any) -> dict[str, Any]:
    """Return a checked copy of a parsed params mapping, or raise ParamsError naming the key."""
    params = _check_mapping("", raw, SPEC)
    _cross_checks(params)
    return params


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping.

    PyYAML keeps the last of two equal keys silently; a user who pasted a block
    twice would then see a misleading "missing" error for keys of the lost copy.
    """

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` (YAML 1.1 merge keys): the base's keys may be overridden
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ParamsError(
                    f"{key}: given twice in one mapping (lines {seen[key]} and {line}); keep one"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 (PyYAML) reads a float only with a dot ("1.0e-1"); "1e-1" and "2E3" would be strings.
# Readers of YAML 1.2 and people read them as numbers, so this loader does too.
_EXPONENT_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789")
)


def read_params_file(path: str | Path) -> Any:
    """The parsed YAML of a params file, with clear errors for every way reading fails.

    The messages do not repeat the file's name: the caller prints it in front.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"not found at {path} (run from the project root)") from None
    except IsADirectoryError:
        raise ParamsError(f"{path} is a folder; --params takes a YAML file") from None
    except UnicodeDecodeError as err:
        raise ParamsError(f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise ParamsError(f"cannot read {path} ({err.strerror or err})") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ParamsError(f"not valid YAML: {err}") from None


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read and validate a params file.

    Parameters
    ----------
    path
        The YAML file, ``params.yaml`` at the project root by default.

    Returns
    -------
    dict
        The validated params, grouped by stage as in the file.
    """
    return validate_params(read_params_file(path))
