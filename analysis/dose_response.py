"""Dose-response of the downstream check: settings along the path from the user's setting to
the fitted one, their held-out closeness with its uncertainty, and what the curve shows.

The path interpolates every parameter of the fit's family (:data:`analysis.fit.FIT_KEYS`) in
the fit's own parameterisation: range ends that the search moves by a log-normal factor
(band fractions, band and segment counts, segment lengths) geometrically, positions, the
full-clip share and its coverage additively; each point is made valid as the fit makes its
candidates (:func:`analysis.fit._clean`). A mixture fit is approached component by component.

The held-out score of every setting (path points and presets) is computed on the type's
first held-out half, with the same masks and the same bootstrap resamples of the held-out
regions as ``recommend`` uses, so the presets' and the fitted setting's scores are those of
``recommendations.json``; the resamples carry the mask score's own uncertainty into the rank
correlation of closeness and AUC (with test clips and training seeds resampled too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from analysis.artifacts import read_localization_summary, read_region_rows
from analysis.detection import interval, spearman
from analysis.evidence import evidence_by_id, evidence_halves, group_seed
from analysis.fit import FIT_KEYS, _clean, fitted_draw, strategy_features
from analysis.mel import MelGeometry
from analysis.regions import FEATURE_COLUMNS, profile_features
from analysis.scoring import paired_bootstrap, preset_points
from analysis.strategies.options import SEED_DEFAULTS

PATH_PREFIX = "path_"  # a path point's name: path_<percent of the way to the fitted setting>
# Keys the fit moves additively (see analysis.fit._perturb); all other FIT_KEYS multiplicatively.
ADDITIVE_KEYS = frozenset(
    k for k in FIT_KEYS if "position" in k or "coverage" in k or k == "full_time_prob"
)


def family_setting(preset: dict[str, Any], T: int) -> dict[str, Any]:
    """A preset of the fit's family as all :data:`FIT_KEYS` (unset keys at the family's
    defaults; an unset ``max_seg_len`` is the whole clip)."""
    out = {k: preset.get(k, SEED_DEFAULTS[k]) for k in FIT_KEYS}
    if out["max_seg_len"] is None:
        out["max_seg_len"] = T
    return out


def interpolate(
    start: dict[str, Any], end: dict[str, Any], t: float, n_mels: int, T: int
) -> dict[str, Any]:
    """The setting ``t`` of the way from ``start`` to ``end`` (both :data:`FIT_KEYS`), in the
    fit's parameterisation (geometric for scale keys, linear for additive ones), cleaned."""
    out = {}
    for key in FIT_KEYS:
        a, b = float(start[key]), float(end[key])
        if key in ADDITIVE_KEYS:
            out[key] = (1 - t) * a + t * b
        else:
            a, b = max(a, 1e-3), max(b, 1e-3)
            out[key] = float(np.exp((1 - t) * np.log(a) + t * np.log(b)))
    return _clean(out, n_mels, T)


def path_name(t: float) -> str:
    """A path point's setting name: ``path_50`` is half way to the fitted setting."""
    return f"{PATH_PREFIX}{round(100 * t)}"


def path_fractions(n_points: int) -> list[float]:
    """The interior fractions of a path of ``n_points`` settings that starts at the user's
    setting (0) and ends at the fitted one (1): both ends are trained under their own names."""
    return [k / (n_points - 1) for k in range(1, n_points - 1)]


def path_settings(
    user_preset: dict[str, Any], fitted: dict[str, Any] | None, n_points: int, shape: tuple
) -> dict[str, dict[str, Any]]:
    """The interior settings of the path from the user's preset to the fitted setting
    (``fitted``: a strategy setting as :func:`analysis.downstream.settings_of` makes it,
    single or mixture); empty where either end is outside the fit's family."""
    n_mels, T = shape
    if fitted is None or user_preset.get("kind") != "audio_specific":
        return {}
    start = family_setting(user_preset, T)
    out = {}
    for t in path_fractions(n_points):
        if fitted["kind"] == "mixture":
            parts = [
                {**c, "fitted": interpolate(start, family_setting(c["fitted"], T), t, n_mels, T)}
                for c in fitted["components"]
            ]
            out[path_name(t)] = {"kind": "mixture", "components": parts}
        else:
            end = family_setting(fitted, T)
            out[path_name(t)] = {"kind": "audio_specific", **interpolate(start, end, t, n_mels, T)}
    return out


def held_out_half(
    build_dir: Path, machine_type: str, settings: dict[str, Any]
) -> tuple[dict[str, np.ndarray], list[str], int, int]:
    """The type's first held-out half as ``recommend`` made it: region features, their machine
    IDs (the bootstrap's clusters), the type row's seed and its number of independent regions
    (a pooled region counts once)."""
    loc_dir = build_dir / "localization"
    rows = read_region_rows(loc_dir, machine_type)
    id_summaries = read_localization_summary(loc_dir, machine_type)["ids"]
    evidence = evidence_by_id(rows, id_summaries, settings)
    seed = group_seed(settings, machine_type, "all")
    _, held_out, labels, _ = evidence_halves(evidence, settings["fit_fraction"], seed)
    return held_out, labels["holdout_groups"], seed, len(set(labels["holdout_files"]))


def setting_masks(
    name: str, setting: dict[str, Any], geometry: MelGeometry, rec: dict[str, Any], seed: int
) -> dict[str, np.ndarray]:
    """A non-preset setting's masks as ``recommend`` draws the fitted setting's (the same
    count and seeds), as region features."""
    if setting["kind"] == "mixture":
        draw = fitted_draw({}, geometry, rec, seed + 4, setting["components"])
        return profile_features(*draw)
    plain = {k: v for k, v in setting.items() if k != "kind"}
    return strategy_features(plain, geometry, 4 * rec["n_masks_per_candidate"], seed + 1)


def mask_scores(
    params: dict[str, Any],
    build_dir: Path,
    machine_type: str,
    settings: dict[str, dict[str, Any]],
) -> tuple[dict[str, float], dict[str, np.ndarray], int] | None:
    """Every setting's held-out mask score, its ``recommend.n_bootstrap`` resampled values
    (paired: the same resampled regions score every setting) and the number of independent
    held-out regions; None without a held-out half."""
    rec = params["recommend"]
    geometry = MelGeometry.from_params(params)
    n_mels, T = geometry.spectrogram_shape
    held_out, groups, seed, n_independent = held_out_half(build_dir, machine_type, rec)
    if held_out[FEATURE_COLUMNS[0]].size == 0:
        return None
    presets = [n for n in settings if n in params["masks"]["presets"]]
    candidates: dict[str, Any] = dict(preset_points(build_dir, presets, (n_mels, T)))
    for name, setting in settings.items():
        if name not in candidates:
            candidates[name] = setting_masks(name, setting, geometry, rec, seed)
    candidates = {n: candidates[n] for n in settings}
    point, boots = paired_bootstrap(
        candidates, held_out, groups, n_mels, T, rec["n_bootstrap"], seed + 2
    )
    return point, {n: boots[:, j] for j, n in enumerate(candidates)}, n_independent


def curve_shape(closeness, auc, tolerance: float) -> str:
    """What AUC against closeness shows, in words (points in any order; ``tolerance``: AUC
    differences at most this large count as none).

    "flat" where every AUC lies within ``tolerance`` of every other; "monotone: closer trains
    better" ("... worse") where no closer setting falls (rises) below (above) a farther one by
    more than ``tolerance``; "peaked" where the best AUC lies strictly between the farthest
    and the closest setting and beats both by more than ``tolerance`` ("dipped": the worst,
    below both); else "irregular".
    """
    order = np.argsort(np.asarray(closeness, dtype=float), kind="stable")
    y = np.asarray(auc, dtype=float)[order]
    if len(y) < 3:
        return "too few settings"
    if np.ptp(y) <= tolerance:
        return "flat"
    drops = y[None, :] - y[:, None]  # [i, j]: AUC of j minus AUC of i (j closer where j > i)
    later = np.triu(np.ones_like(drops, dtype=bool), 1)
    if np.all(drops[later] >= -tolerance):
        return "monotone: closer trains better"
    if np.all(drops[later] <= tolerance):
        return "monotone: closer trains worse"
    top, bottom = int(np.argmax(y)), int(np.argmin(y))
    if 0 < top < len(y) - 1 and y[top] - max(y[0], y[-1]) > tolerance:
        return "peaked"
    if 0 < bottom < len(y) - 1 and min(y[0], y[-1]) - y[bottom] > tolerance:
        return "dipped"
    return "irregular"


def supported_shape(shape: str, rho_low: float, rho_high: float) -> str:
    """The curve's shape as the report may state it: a monotone trend only where the rank
    correlation's interval lies on that trend's side of 0; else "no trend distinguishable"
    (the point values may still rise or fall: the interval says that could be chance)."""
    trend = {
        "monotone: closer trains better": rho_low > 0,
        "monotone: closer trains worse": rho_high < 0,
    }
    if shape in trend and not trend[shape]:
        return "no trend distinguishable (ρ's interval includes 0)"
    return shape


def dose_response(
    names: list[str],
    points: dict[str, float],
    score_boot: dict[str, np.ndarray],
    auc: dict[str, float],
    auc_boot: dict[str, np.ndarray],
    level: float,
) -> dict[str, Any]:
    """The rank correlation of closeness (minus the held-out score) and AUC over ``names``,
    with an interval whose every resample pairs one paired resample of the held-out regions
    (``score_boot[name][b]``) with one of the test clips and training seeds
    (``auc_boot[name][b, 0]``); the curve's shape (:func:`curve_shape`, tolerance: the median
    half-width of the AUC intervals) and each setting's mask score interval."""
    closeness = [-points[n] for n in names]
    values = [auc[n] for n in names]
    n_boot = len(auc_boot[names[0]])
    scores = np.stack([score_boot[n] for n in names], axis=1)
    rhos = np.array(
        [
            spearman(-scores[b % len(scores)], [auc_boot[n][b, 0] for n in names])
            for b in range(n_boot)
        ]
    )
    rhos = rhos[np.isfinite(rhos)]
    low, high = interval(rhos, level) if len(rhos) else (float("nan"), float("nan"))
    half_widths = [np.ptp(interval(auc_boot[n][:, 0], level)) / 2 for n in names]
    tolerance = float(np.median(half_widths))
    score_ci = {n: list(interval(score_boot[n], level)) for n in names}
    return {
        "rho": spearman(closeness, values),
        "ci": [low, high],
        "settings": names,
        "resampled": "test clips, training seeds and held-out regions (the mask score)",
        "shape": supported_shape(curve_shape(closeness, values, tolerance), low, high),
        "shape_tolerance": tolerance,
        "mask_score_ci": score_ci,
    }
