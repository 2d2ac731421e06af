"""Load and validate ``params.yaml`` before any stage does work.

Every stage calls :func:`load_params`. The whole file is checked against one
declarative spec (unknown keys, types, ranges) and a few cross-key rules
(``fmax <= sr / 2``, ``min <= max``), and the first problem stops the run with
a :class:`ParamsError` naming the dotted key.

The settings of each ``masks.presets`` entry and the ``masks.resize_methods`` names follow the
mask strategies' rules, so :mod:`analysis.strategies.presets` checks them (in ``check-params``,
the pipeline's first stage, and in the ``masks`` stage, the only one that reads them): this
module imports nothing of the strategies, and a change to their rules reruns no other stage.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from analysis.dcase import LAYOUTS, SECTION_LAYOUT

# The types the synthetic default makes; real data may name any type with a folder under data.root.
MACHINE_TYPES: tuple[str, ...] = ("fan", "pump", "slider", "valve", "ToyCar", "ToyConveyor")
MACHINE_TYPE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # one folder name, no path
SYNTHETIC_DATA_ROOT = "data/synthetic"
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
class ReportDate:
    """``commit`` (the report is dated by SOURCE_DATE_EPOCH, else the last commit) or a
    calendar date ``YYYY-MM-DD``: never the day it is rendered."""

    def check(self, key: str, value: Any) -> Any:
        if isinstance(value, _dt.date):  # YAML reads an unquoted 2026-12-01 as a date
            return value.isoformat()
        if value == "commit":
            return value
        try:
            if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
                return _dt.date.fromisoformat(value).isoformat()
        except ValueError:
            pass
        raise ParamsError(f"{key}: {value!r} is neither 'commit' nor a date YYYY-MM-DD")


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


N_JOBS = Num(int, 0, 512)

SPEC: dict[str, Any] = {
    "data": {
        "root": Text(),
        "layout": Text(LAYOUTS),
        "machine_types": ListOf(Text()),
    },
    "synthetic": {
        "seed": Num(int, 0),
        "ids_per_type": _positive_int(4),
        "train_clips_per_id": _positive_int(),
        "test_normal_clips_per_id": _positive_int(),
        "test_anomaly_clips_per_id": _positive_int(),
        "strength": Num(float, 0.0, 10.0, lo_open=True),
        "layout": Text(("dcase2020", SECTION_LAYOUT)),
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
        "grow_frame_rate": Num(float, 0.0, 0.5, lo_open=True),
        "min_region_cells": _positive_int(),
        "min_normal_clips": Num(int, 4),
        "n_jobs": N_JOBS,
    },
    "power": {
        "seed": Num(int, 0),
        "deltas": ListOf(Num(float, 0.0, 100.0, lo_open=True)),
        "max_normal_clips_per_id": Num(int, 2),
        "n_jobs": N_JOBS,
    },
    "masks": {
        "seed": Num(int, 0),
        "n_masks": Num(int, 10),
        "n_samples": _positive_int(64),
        "q_grids": "q_grids",
        # Projection names and preset settings follow the strategies' rules: checked by
        # analysis.strategies.presets (in check-params and the masks stage), not here.
        "resize_methods": ListOf(Text()),
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
        "path_points": Num(int, 2, 21),
        "synthetic_train_clips_per_id": Num(int, 0, 10000),
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
        "date": ReportDate(),
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
            raise ParamsError(f"{pkey}.kind: missing (every preset names its kind)")
        Text().check(f"{pkey}.kind", preset["kind"])
        if not all(isinstance(k, str) for k in preset):
            raise ParamsError(f"{pkey}: setting names are text")
        out[name] = dict(preset)
    return out


def require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ParamsError(f"{key}: {message}")


def _check_min_max(params: dict, group: str, lo: str, hi: str) -> None:
    g = params[group]
    require(g[lo] <= g[hi], f"{group}.{lo}", f"{g[lo]} is above {group}.{hi} = {g[hi]}")


def _check_data(p: dict) -> None:
    """Machine-type names are folder names; the synthetic default makes only its six types,
    in the layout ``synthetic.layout`` names."""
    data = p["data"]
    for i, name in enumerate(data["machine_types"]):
        require(
            bool(MACHINE_TYPE_NAME.match(name)),
            f"data.machine_types[{i}]",
            f"{name!r} is not a folder name (letters, digits, '_', '.', '-')",
        )
    if Path(data["root"]).as_posix().rstrip("/") != SYNTHETIC_DATA_ROOT:
        return
    for i, name in enumerate(data["machine_types"]):
        require(
            name in MACHINE_TYPES,
            f"data.machine_types[{i}]",
            f"{name!r}: the synthetic default makes only {', '.join(MACHINE_TYPES)}; "
            f"point data.root at a folder with {name}/ for other types",
        )
    layout = p["synthetic"]["layout"]
    require(
        data["layout"] in ("auto", layout),
        "data.layout",
        f"{data['layout']!r} does not read the synthetic default written as "
        f"synthetic.layout = {layout!r} (use auto)",
    )


def _cross_checks(p: dict) -> None:
    _check_data(p)
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
    cap = p["power"]["max_normal_clips_per_id"]
    require(
        cap >= 2 * loc["min_normal_clips"],
        "power.max_normal_clips_per_id",
        f"{cap} normal clips cannot split into a reference and a spiked half of "
        f"localization.min_normal_clips = {loc['min_normal_clips']} each (need at least "
        f"{2 * loc['min_normal_clips']})",
    )
    n_mels, T = f["n_mels"], f["target_T"]
    for grid, factor in p["masks"]["q_grids"].items():
        require(
            factor <= min(n_mels, T),
            f"masks.q_grids.{grid}",
            f"factor {factor} leaves an empty grid for {n_mels} x {T}",
        )
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
