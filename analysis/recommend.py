"""Stage ``recommend``: score every preset against real anomaly regions and fit better ranges.

The score (defined once, in :func:`score`) is the energy distance between the
joint distribution of the masks' features and that of the real regions'
features, each map a point in a weighted feature space (:func:`score_points`)
where frequency position, band width, number of bands and time structure
each weigh once. 0 means the two joint distributions are identical; lower is
closer. Empty masks are points far from every real region, so a preset that
draws empty masks pays for them, and an all-empty preset is worst.

For each machine type (and each machine ID with evidence of its own) the
regions are split in a fit half and a held-out half. The fitted setting is
searched on the fit half, and the closest preset is chosen on the fit half
too; every preset and the fitted one are then scored on the held-out half.
Paired bootstrap intervals (the same resampled held-out clips for every
candidate; IDs resampled first, then clips within them, where a row pools
IDs) give intervals of score *differences*, and a sentence says "A is closer
than B" only where that interval excludes 0.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analysis.io import Progress, load_npz, read_csv, read_json, write_csv, write_json
from analysis.masks import LATENT_PROJECTION, AudioSpecificStrategy, read_masks_meta
from analysis.mel import MelGeometry
from analysis.regions import FEATURE_COLUMNS, profile_features, region_features, score_transform
from analysis.strategies import project_axis, project_maps
from analysis.workers import process_pool, resolve_n_jobs

# The space the fit searches: the band-times-segments family of analysis.strategies with
# several bands at once and a share of full-clip masks (coverage 85-100 %, the family default).
FIT_KEYS = (
    "min_band_fraction",
    "max_band_fraction",
    "min_bands",
    "max_bands",
    "full_time_prob",
    "min_segments",
    "max_segments",
    "min_seg_len",
    "max_seg_len",
    "min_band_position",
    "max_band_position",
)
# Many short segments that merge into one clip-long segment score like a single long segment;
# as advice the single segment is the right answer. The search therefore minimizes
# score + PARSIMONY * (log(1 + max_segments) / log(1 + T/2)); reported scores stay pure.
PARSIMONY = 0.01

# The joint score's coordinates, each scaled to about [0, 1], and their weights: frequency
# position, band width, number of bands and time structure weigh once each (the two time
# coordinates share one weight: coverage and the number of segments together fix the mean
# segment length, which is therefore not a coordinate of its own).
SCORE_COORDINATES: tuple[tuple[str, float], ...] = (
    ("band_centre_fraction", 1.0),
    ("band_width_log", 1.0),
    ("n_bands", 1.0),
    ("time_coverage", float(np.sqrt(0.5))),
    ("n_segments", float(np.sqrt(0.5))),
)
EMPTY_POINT = -1.0  # every coordinate of an empty mask: at least 2 (weighted) from any region
MIN_HOLDOUT_FOR_CI = 5  # fewer held-out regions than this: no interval, and no claim

SCORE_DEFINITION = (
    "score = energy distance between the joint distribution of the masks' features and that of "
    "the real anomaly regions' features: 2 E|X - Y| - E|X - X'| - E|Y - Y'| (Euclidean; the "
    "within-sample means over pairs of different members, so it is unbiased and can fall "
    "slightly below 0 by chance when the two are alike). "
    "Each map is a point with coordinates band centre (fraction of n_mels), band width "
    "(log(1 + rows) / log(1 + n_mels)), number of bands (log(1 + n) / log(1 + n_mels/2)), each "
    "with weight 1, and time coverage and number of segments (log(1 + n) / log(1 + T/2)), each "
    "with weight sqrt(1/2), so frequency position, band width, band count and time structure "
    "weigh once each. An empty mask is the point with every coordinate -1, far from every real "
    "region. 0 means identical joint distributions; lower is closer. The score cannot see where "
    "the bands of a multi-band map sit beyond their cell-weighted centre, nor where in the clip "
    "the segments lie."
)


def score_points(features: dict[str, np.ndarray], n_mels: int, T: int) -> np.ndarray:
    """(B, d) points of maps in the score's weighted feature space; empty maps at EMPTY_POINT."""
    rows = np.asarray(features["band_fraction"], dtype=np.float64) * n_mels
    columns = {
        "band_centre_fraction": np.asarray(features["band_centre_fraction"], dtype=np.float64),
        "band_width_log": np.log1p(rows) / np.log1p(n_mels),
        "n_bands": score_transform("n_bands", features["n_bands"], n_mels, T),
        "time_coverage": np.asarray(features["time_coverage"], dtype=np.float64),
        "n_segments": score_transform("n_segments", features["n_segments"], n_mels, T),
    }
    points = np.stack([columns[name] for name, _ in SCORE_COORDINATES], axis=1)
    points[~np.all(np.isfinite(points), axis=1)] = EMPTY_POINT
    return points * np.array([w for _, w in SCORE_COORDINATES])


def _within(distances: np.ndarray) -> float:
    """Mean distance between two different members of one sample (0 for a single member).

    The U-statistic: the zero self-distances are left out, so the score of a
    sample against its own distribution is 0 on average at every sample size,
    and differences of scores are unbiased (what the bootstrap intervals need).
    """
    n = distances.shape[0]
    return float(distances.sum() / (n * (n - 1))) if n > 1 else 0.0


def _mean_pair_distance(points: np.ndarray) -> float:
    """``_within(cdist(points, points))`` from the n(n-1)/2 distinct pairs only (half the work)."""
    from scipy.spatial.distance import pdist

    return float(pdist(points).mean()) if points.shape[0] > 1 else 0.0


def _cdist(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of ``x`` and of ``y`` (scipy, imported when used:
    0.3 s that the stages importing this module for its constants do not need)."""
    from scipy.spatial.distance import cdist

    return cdist(x, y)


def _energy(cross: float, self_masks: float, self_real: float) -> float:
    return float(2 * cross - self_masks - self_real)


def score(
    mask_features: dict[str, np.ndarray], real_features: dict[str, np.ndarray], n_mels: int, T: int
) -> float:
    """The distance between mask features and real region features (lower is closer).

    See ``SCORE_DEFINITION``. Raises ValueError when either side has no maps.
    """
    x, y = score_points(mask_features, n_mels, T), score_points(real_features, n_mels, T)
    if x.shape[0] == 0 or y.shape[0] == 0:
        raise ValueError("score needs at least one mask and one real region")
    return _energy(_cdist(x, y).mean(), _mean_pair_distance(x), _mean_pair_distance(y))


def cluster_resamples(groups: list[str], n_boot: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Bootstrap index sets: with several groups (machine IDs), groups are drawn with
    replacement first and clips within each drawn group next; with one group, clips only."""
    groups_arr = np.asarray(groups)
    members = [np.flatnonzero(groups_arr == g) for g in sorted(set(groups))]
    draws = []
    for _ in range(n_boot):
        if len(members) > 1:
            chosen = rng.integers(0, len(members), len(members))
            draws.append(np.concatenate([rng.choice(members[c], members[c].size) for c in chosen]))
        else:
            draws.append(rng.integers(0, len(groups), len(groups)))
    return draws


def paired_bootstrap(
    candidates: dict[str, dict[str, np.ndarray]],
    real: dict[str, np.ndarray],
    groups: list[str],
    n_mels: int,
    T: int,
    n_boot: int,
    seed: int,
) -> tuple[dict[str, float], np.ndarray]:
    """Every candidate's score on ``real`` and on ``n_boot`` paired resamples of it.

    The same resampled clips score every candidate, so differences between
    candidates carry only the resampling noise they share. Returns the point
    scores and a (n_boot, n_candidates) matrix in ``candidates`` order.
    """
    y = score_points(real, n_mels, T)
    d_yy = _cdist(y, y)
    names = list(candidates)
    cross, self_terms = {}, {}
    for name in names:
        x = score_points(candidates[name], n_mels, T)
        cross[name] = _cdist(x, y).mean(axis=0)  # each real region's mean distance to the masks
        self_terms[name] = _mean_pair_distance(x)
    point = {n: _energy(cross[n].mean(), self_terms[n], _within(d_yy)) for n in names}
    draws = cluster_resamples(groups, n_boot, np.random.default_rng(seed))
    boots = np.empty((n_boot, len(names)))
    for b, idx in enumerate(draws):
        yy = _within(d_yy[np.ix_(idx, idx)])
        for j, name in enumerate(names):
            boots[b, j] = _energy(cross[name][idx].mean(), self_terms[name], yy)
    return point, boots


def interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of bootstrap values at ``level``."""
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def strategy_features(
    settings: dict[str, Any], geometry: MelGeometry, n_masks: int, seed: int
) -> dict[str, np.ndarray]:
    """Region features of ``n_masks`` masks of an AudioSpecificStrategy setting (drawn as factors)."""
    strategy = AudioSpecificStrategy(geometry.spectrogram_shape, seed=seed, **settings)
    rows, frames = strategy.draw_factors(n_masks)
    return profile_features(rows, frames)


def _clean(candidate: dict[str, float], n_mels: int, T: int) -> dict[str, Any]:
    """Round and order a raw candidate into a valid AudioSpecificStrategy setting."""
    bf = sorted(
        float(np.clip(candidate[k], 1.0 / n_mels, 1.0))
        for k in ("min_band_fraction", "max_band_fraction")
    )
    bands = sorted(int(np.clip(round(candidate[k]), 1, 8)) for k in ("min_bands", "max_bands"))
    seg = sorted(
        int(np.clip(round(candidate[k]), 1, T // 2)) for k in ("min_segments", "max_segments")
    )
    ln = sorted(int(np.clip(round(candidate[k]), 1, T)) for k in ("min_seg_len", "max_seg_len"))
    pos = sorted(
        float(np.clip(candidate[k], 0.0, 1.0)) for k in ("min_band_position", "max_band_position")
    )
    if pos[1] - pos[0] < bf[0]:  # the band must fit in its position range
        centre = 0.5 * (pos[0] + pos[1])
        pos = [max(0.0, centre - bf[0] / 2), min(1.0, centre + bf[0] / 2)]
        if pos[1] - pos[0] < bf[0]:
            pos = [0.0, bf[0]] if pos[0] == 0.0 else [1.0 - bf[0], 1.0]
    return {
        "min_band_fraction": round(bf[0], 4),
        "max_band_fraction": round(bf[1], 4),
        "min_bands": bands[0],
        "max_bands": bands[1],
        "full_time_prob": round(float(np.clip(candidate["full_time_prob"], 0.0, 1.0)), 3),
        "min_segments": seg[0],
        "max_segments": seg[1],
        "min_seg_len": ln[0],
        "max_seg_len": ln[1],
        "min_band_position": round(pos[0], 4),
        "max_band_position": round(pos[1], 4),
    }


FULL_CLIP_COVERAGE = 0.85  # a region covering this much of the clip counts as "full clip"


def initial_guess(real: dict[str, np.ndarray], n_mels: int, T: int) -> dict[str, Any]:
    """Ranges read off the real features' 10th and 90th percentiles.

    The share of regions covering at least ``FULL_CLIP_COVERAGE`` of the clip
    starts ``full_time_prob``; the segment ranges come from the other regions.
    """

    def q(values, p):
        values = values[np.isfinite(values)]
        return float(np.percentile(values, p)) if values.size else 1.0

    full = real["time_coverage"] >= FULL_CLIP_COVERAGE
    part = ~full if (~full).any() else np.ones_like(full)
    low_edge = real["band_centre_fraction"] - real["band_fraction"] / 2
    high_edge = real["band_centre_fraction"] + real["band_fraction"] / 2
    per_band = real["band_fraction"] / np.maximum(real["n_bands"], 1)
    return _clean(
        {
            "min_band_fraction": q(per_band, 10),
            "max_band_fraction": q(per_band, 90),
            "min_bands": q(real["n_bands"], 10),
            "max_bands": q(real["n_bands"], 90),
            "full_time_prob": float(np.mean(full)),
            "min_segments": q(real["n_segments"][part], 10),
            "max_segments": q(real["n_segments"][part], 90),
            "min_seg_len": q(real["mean_seg_len_frames"][part], 10),
            "max_seg_len": q(real["max_seg_len_frames"][part], 90),
            "min_band_position": q(low_edge, 5),
            "max_band_position": q(high_edge, 95),
        },
        n_mels,
        T,
    )


def _perturb(
    base: dict[str, Any], rng: np.random.Generator, spread: float, n_mels: int, T: int
) -> dict[str, Any]:
    """A random neighbour: each range end moved by a log-normal factor (positions and the
    full-clip share additively)."""
    out = {}
    for key, value in base.items():
        if "position" in key or key == "full_time_prob":
            out[key] = value + rng.normal(0, 0.15 * spread)
        else:
            out[key] = max(value, 1e-3) * float(np.exp(rng.normal(0, spread)))
    return _clean(out, n_mels, T)


def _random_candidate(rng: np.random.Generator, n_mels: int, T: int) -> dict[str, Any]:
    """A broad draw over the whole space, so the search is not stuck near the initial guess."""
    lo_len = float(np.exp(rng.uniform(0, np.log(T))))
    lo_seg = float(np.exp(rng.uniform(0, np.log(T // 4))))
    lo_bf = float(np.exp(rng.uniform(np.log(1 / n_mels), np.log(0.5))))
    lo_bands = float(rng.integers(1, 4))
    return _clean(
        {
            "min_band_fraction": lo_bf,
            "max_band_fraction": lo_bf * np.exp(rng.uniform(0, 1.5)),
            "min_bands": lo_bands,
            "max_bands": lo_bands + rng.integers(0, 3),
            "full_time_prob": float(rng.choice([0.0, rng.uniform(0, 1), 1.0])),
            "min_segments": lo_seg,
            "max_segments": lo_seg * np.exp(rng.uniform(0, 2)),
            "min_seg_len": lo_len,
            "max_seg_len": lo_len * np.exp(rng.uniform(0, 2)),
            "min_band_position": rng.uniform(0, 0.5),
            "max_band_position": rng.uniform(0.5, 1),
        },
        n_mels,
        T,
    )


def fit_preset(
    real: dict[str, np.ndarray], geometry: MelGeometry, settings: dict[str, Any], seed: int
) -> tuple[dict[str, Any], float]:
    """Search AudioSpecificStrategy settings whose masks are closest to ``real`` regions.

    Every candidate is drawn with the same seed (common random numbers), so
    differences in score come from the settings, not from sampling noise. The
    search adds ``PARSIMONY`` times the normalized ``max_segments`` so that of
    two settings that score alike the one with fewer segments wins.

    Parameters
    ----------
    real
        Region features (``FEATURE_COLUMNS`` arrays) of the fit half.
    settings
        ``recommend`` params: ``n_masks_per_candidate``, ``n_search_candidates``, ``n_refine_rounds``.

    Returns
    -------
    best, best_score
        The fitted setting (keys ``FIT_KEYS``) and its score on ``real``.
    """
    n_mels, T = geometry.spectrogram_shape
    rng = np.random.default_rng(seed)
    n_masks = settings["n_masks_per_candidate"]
    cache: dict[tuple, float] = {}

    def evaluate(candidate: dict[str, Any]) -> float:
        """Score plus a small parsimony term, so near-ties go to the simpler setting."""
        key = tuple(candidate[k] for k in FIT_KEYS)
        if key not in cache:
            fit = score(strategy_features(candidate, geometry, n_masks, seed), real, n_mels, T)
            simplicity = score_transform(
                "n_segments", candidate["max_segments"], n_mels, T
            ) + score_transform("n_bands", candidate["max_bands"], n_mels, T)
            cache[key] = fit + PARSIMONY * float(simplicity)
        return cache[key]

    best = initial_guess(real, n_mels, T)
    best_score = evaluate(best)
    n_search = settings["n_search_candidates"]
    for i in range(n_search):
        candidate = (
            _random_candidate(rng, n_mels, T) if i % 4 == 3 else _perturb(best, rng, 0.6, n_mels, T)
        )
        value = evaluate(candidate)
        if value < best_score:
            best, best_score = candidate, value
    spread = 0.3
    for _ in range(settings["n_refine_rounds"]):
        for _ in range(max(8, n_search // 8)):
            candidate = _perturb(best, rng, spread, n_mels, T)
            value = evaluate(candidate)
            if value < best_score:
                best, best_score = candidate, value
        spread *= 0.6
    return best, score(strategy_features(best, geometry, n_masks, seed), real, n_mels, T)


def split_halves(files: list[str], groups: list[str], fit_fraction: float, seed: int) -> np.ndarray:
    """Boolean 'in the fit half' per clip: a seeded shuffle within each group (machine ID)."""
    in_fit = np.zeros(len(files), dtype=bool)
    for group in sorted(set(groups)):
        idx = np.array(
            sorted((i for i, g in enumerate(groups) if g == group), key=lambda i: files[i])
        )
        rng = np.random.default_rng([seed, zlib.crc32(group.encode())])
        idx = idx[rng.permutation(idx.size)]
        in_fit[idx[: int(round(fit_fraction * idx.size))]] = True
    return in_fit


def _features_of(rows: list[dict[str, str]]) -> dict[str, np.ndarray]:
    """Feature arrays from CSV rows; blank cells (empty maps) become NaN."""
    return {c: np.array([float(r[c]) if r[c] else np.nan for r in rows]) for c in FEATURE_COLUMNS}


AGREEMENT_BINS = 3  # a clip-level region agrees with the pooled map within this many mel bins


def id_evidence(
    rows: list[dict[str, str]], id_summary: dict[str, Any], settings: dict[str, Any]
) -> dict[str, Any]:
    """Which evidence one machine ID supports, and why.

    Clip-level regions are used where the ID has at least ``min_anomaly_clips``
    of them, in at least ``min_region_share`` of its anomalous clips, and (when
    the pooled test found a region) at least half of them have their band
    centre within ``AGREEMENT_BINS`` bins of a pooled-region row. Otherwise the
    ID-level (pooled) regions are used when the pooled test found a region in
    both halves of the anomalous clips (one to fit, one to score). Otherwise
    there is not enough evidence.
    """
    found = [r for r in rows if r["found"] == "1"]
    share = len(found) / len(rows) if rows else 0.0
    pooled = (id_summary or {}).get("id_level", {})
    pooled_rows = np.array(pooled.get("all", {}).get("rows") or [], dtype=float)
    agreement = None
    if pooled.get("all", {}).get("found") and found:
        centres = np.array([float(r["band_centre_bin"]) for r in found])
        distance = np.abs(centres[:, None] - pooled_rows[None, :]).min(axis=1)
        agreement = float(np.mean(distance <= AGREEMENT_BINS))
    enough = len(found) >= settings["min_anomaly_clips"] and share >= settings["min_region_share"]
    out = {"n_clip_regions": len(found), "clip_region_share": share, "agreement": agreement}
    if enough and (agreement is None or agreement >= 0.5):
        return {**out, "evidence": "clip-level", "found": found}
    halves = pooled.get("fit", {}).get("found") and pooled.get("holdout", {}).get("found")
    if halves:
        return {**out, "evidence": "ID-level", "pooled": pooled}
    reasons = []
    if not enough:
        reasons.append(
            f"clip-level regions in {len(found)} of {len(rows)} anomalous clips (needs "
            f"{settings['min_anomaly_clips']} and a share of {settings['min_region_share']:.0%})"
        )
    elif agreement is not None:
        reasons.append(f"clip-level regions disagree with the pooled map ({agreement:.0%} agree)")
    if pooled.get("all", {}).get("found"):
        reasons.append("a pooled region, but not in both halves of the anomalous clips")
    else:
        p_value = pooled.get("all", {}).get("p_value")
        reasons.append(
            "no pooled region" + (f" (p = {p_value:.3g})" if p_value is not None else "")
        )
    return {**out, "evidence": None, "reason": "; ".join(reasons)}


def _repeat_features(features: dict[str, float | None], count: int) -> dict[str, np.ndarray]:
    return {
        c: np.full(count, np.nan if features[c] is None else features[c]) for c in FEATURE_COLUMNS
    }


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {c: np.concatenate([p[c] for p in parts]) for c in FEATURE_COLUMNS}


def evidence_halves(
    evidence: dict[str, dict[str, Any]], fit_fraction: float, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, list[str]], dict[str, str]]:
    """Fit and held-out region features of a group from each ID's evidence.

    Clip-level IDs contribute their clips' regions, split by :func:`split_halves`.
    ID-level IDs contribute the pooled region of one half of their anomalous
    clips to the fit side and that of the other half to the held-out side, each
    counted once per clip of its half (every anomalous clip of the ID is taken
    to look like its ID's pooled region).

    Returns the fit and held-out features, ``labels`` (``fit_files``,
    ``holdout_files``, ``holdout_groups``: what each region is and its machine
    ID) and the evidence each ID used.
    """
    fit_parts, held_parts, used = [], [], {}
    labels: dict[str, list[str]] = {"fit_files": [], "holdout_files": [], "holdout_groups": []}
    found = [r for e in evidence.values() if e["evidence"] == "clip-level" for r in e["found"]]
    if found:
        in_fit = split_halves(
            [r["file"] for r in found], [r["machine_id"] for r in found], fit_fraction, seed
        )
        real = _features_of(found)
        fit_parts.append({k: v[in_fit] for k, v in real.items()})
        held_parts.append({k: v[~in_fit] for k, v in real.items()})
        labels["fit_files"] += [r["file"] for r, f in zip(found, in_fit, strict=True) if f]
        held = [r for r, f in zip(found, in_fit, strict=True) if not f]
        labels["holdout_files"] += [r["file"] for r in held]
        labels["holdout_groups"] += [r["machine_id"] for r in held]
    for mid, e in evidence.items():
        used[mid] = e["evidence"] or "none"
        if e["evidence"] == "ID-level":
            n_fit, n_held = (e["n_anomaly"] + 1) // 2, e["n_anomaly"] // 2
            fit_parts.append(_repeat_features(e["pooled"]["fit"]["features"], n_fit))
            held_parts.append(_repeat_features(e["pooled"]["holdout"]["features"], n_held))
            labels["fit_files"] += [pooled_label(mid, "fit")] * n_fit
            labels["holdout_files"] += [pooled_label(mid, "holdout")] * n_held
            labels["holdout_groups"] += [mid] * n_held
    if not fit_parts:
        empty = {c: np.zeros(0) for c in FEATURE_COLUMNS}
        return empty, empty, labels, used
    return _concat(fit_parts), _concat(held_parts), labels, used


def evidence_label(used: dict[str, str]) -> str:
    kinds = {k for k in used.values() if k != "none"}
    if len(kinds) == 1:
        return kinds.pop()
    return "mixed: " + "; ".join(f"{mid} {kind}" for mid, kind in sorted(used.items()))


def group_seed(settings: dict[str, Any], machine_type: str, machine_id: str) -> int:
    """The seed of one recommendations row (its split, search and bootstrap)."""
    return settings["seed"] * 7919 + zlib.crc32(f"{machine_type}/{machine_id}".encode())


def recommend_group(
    machine_type: str,
    machine_id: str,
    rows: list[dict[str, str]],
    id_summaries: dict[str, Any],
    preset_features: dict[str, dict[str, np.ndarray]],
    geometry: MelGeometry,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """One recommendations row: fitted ranges and every preset's held-out score with CIs.

    ``rows`` are the clip-level region rows of the group's anomalous clips and
    ``id_summaries`` the localization summaries of its IDs; :func:`id_evidence`
    decides per ID which evidence the row uses, and the row says so.
    """
    n_mels, T = geometry.spectrogram_shape
    ids = sorted({r["machine_id"] for r in rows})
    evidence = {}
    for mid in ids:
        id_rows = [r for r in rows if r["machine_id"] == mid]
        evidence[mid] = {
            **id_evidence(id_rows, id_summaries.get(mid, {}), settings),
            "n_anomaly": len(id_rows),
        }
    out: dict[str, Any] = {
        "machine_type": machine_type,
        "machine_id": machine_id,
        "n_anomaly": len(rows),
        "n_regions": sum(e["n_clip_regions"] for e in evidence.values()),
    }
    seed = group_seed(settings, machine_type, machine_id)
    fit_real, held_out, labels, used = evidence_halves(evidence, settings["fit_fraction"], seed)
    out["evidence"] = evidence_label(used) if any(v != "none" for v in used.values()) else "none"
    n_fit, n_held = fit_real[FEATURE_COLUMNS[0]].size, held_out[FEATURE_COLUMNS[0]].size
    if n_fit == 0 or n_held == 0:
        reasons = [
            e["reason"] if len(ids) == 1 else f"{mid}: {e['reason']}"
            for mid, e in evidence.items()
            if e.get("reason")
        ]
        out["status"] = "not enough evidence: " + (
            "; ".join(reasons) or f"{n_fit} clips to fit and {n_held} held out"
        )
        return out
    fitted, fit_score = fit_preset(fit_real, geometry, settings, seed)
    out.update(
        {"status": "ok", "n_fit": int(n_fit), "n_holdout": int(n_held), **fitted, "fitted": fitted}
    )
    out["fit_score"] = fit_score
    # The closest preset is chosen on the fit half, then reported on the held-out half.
    fit_scores = {p: score(f, fit_real, n_mels, T) for p, f in preset_features.items()}
    best = min(fit_scores, key=lambda p: (fit_scores[p], p))
    out["best_preset"], out["best_preset_fit_score"] = best, fit_scores[best]
    candidates = dict(preset_features)
    candidates["recommended"] = strategy_features(
        fitted, geometry, 4 * settings["n_masks_per_candidate"], seed + 1
    )
    out.update(
        held_out_comparison(
            candidates,
            held_out,
            labels["holdout_groups"],
            best,
            geometry,
            settings,
            seed + 2,
            # A pooled region stands for all its half's clips but is one observation.
            len(set(labels["holdout_files"])),
        )
    )
    out["holdout_files"] = labels["holdout_files"]
    real = _concat([fit_real, held_out])
    out["multi_band_share"] = float(np.mean(real["n_bands"] >= 2))
    out["full_clip_share"] = float(np.mean(real["time_coverage"] >= 0.95))
    return out


# The paired differences every ok row reports: (name, a, b) is score(a) - score(b).
def comparisons(best: str, presets: list[str]) -> list[tuple[str, str, str]]:
    out = [("fitted_vs_best", "recommended", best)]
    if "current" in presets:
        out.append(("fitted_vs_current", "recommended", "current"))
        if best != "current":
            out.append(("best_vs_current", best, "current"))
    return out


def held_out_comparison(
    candidates: dict[str, dict[str, np.ndarray]],
    held_out: dict[str, np.ndarray],
    groups: list[str],
    best: str,
    geometry: MelGeometry,
    settings: dict[str, Any],
    seed: int,
    n_independent: int | None = None,
) -> dict[str, Any]:
    """Held-out scores of every candidate, and paired intervals of score differences.

    With fewer than ``MIN_HOLDOUT_FOR_CI`` independent held-out regions (a
    pooled region counts once, however many clips it stands for) no interval
    is given (``*_ci_*`` None) and no difference can be called distinguishable.
    """
    n_mels, T = geometry.spectrogram_shape
    point, boots = paired_bootstrap(
        candidates, held_out, groups, n_mels, T, settings["n_bootstrap"], seed
    )
    names = list(candidates)
    n_independent = len(groups) if n_independent is None else n_independent
    with_ci = n_independent >= MIN_HOLDOUT_FOR_CI
    out: dict[str, Any] = {"intervals": with_ci, "n_independent_holdout": n_independent}
    for j, name in enumerate(names):
        lo, hi = interval(boots[:, j], settings["ci_level"]) if with_ci else (None, None)
        out[f"score_{name}"], out[f"score_{name}_ci_low"], out[f"score_{name}_ci_high"] = (
            point[name],
            lo,
            hi,
        )
    for label, a, b in comparisons(best, [n for n in names if n != "recommended"]):
        diff = point[a] - point[b]
        if with_ci:
            lo, hi = interval(
                boots[:, names.index(a)] - boots[:, names.index(b)], settings["ci_level"]
            )
            verdict = "closer" if hi < 0 else "farther" if lo > 0 else "not distinguishable"
        else:
            lo, hi, verdict = None, None, "not distinguishable"
        out[f"diff_{label}"], out[f"diff_{label}_ci_low"], out[f"diff_{label}_ci_high"] = (
            diff,
            lo,
            hi,
        )
        out[f"diff_{label}_verdict"] = verdict
    return out


def _recommend_task(task: tuple) -> dict[str, Any]:
    (
        machine_type,
        machine_id,
        rows,
        id_summaries,
        real_on_grids,
        presets,
        geometry,
        settings,
        latent,
    ) = task
    row = recommend_group(machine_type, machine_id, rows, id_summaries, presets, geometry, settings)
    if row.get("status") == "ok":
        row.update(latent_scores(row, real_on_grids, latent, geometry, settings))
    return row


@dataclass(frozen=True)
class LatentView:
    """The latent grids and every preset's mask features projected onto each of them."""

    grids: dict[str, tuple[int, int]]
    presets: dict[str, dict[str, dict[str, np.ndarray]]]


def pooled_label(machine_id: str, part: str) -> str:
    """The label a pooled region of one half carries in fit/held-out lists."""
    return f"{machine_id}: pooled region of the {'fit' if part == 'fit' else 'held-out'} half"


def latent_region_features(
    loc: dict[str, np.ndarray], grids: dict[str, tuple[int, int]]
) -> dict[str, dict[str, dict[str, float]]]:
    """Features of every real region (clip-level, and pooled halves) projected onto each grid
    the way masks are (``LATENT_PROJECTION``), keyed by grid and by the region's label."""
    maps = dict(zip(loc["region_files"].tolist(), loc["regions"], strict=True))
    for key, value in loc.items():
        for part in ("fit", "holdout"):
            if key.endswith(f"__pooled_region_{part}"):
                maps[pooled_label(key.split("__")[0], part)] = value
    out: dict[str, dict[str, dict[str, float]]] = {g: {} for g in grids}
    if not maps:
        return out
    labels = list(maps)
    stack = np.stack([maps[label] for label in labels])
    for grid, q_shape in grids.items():
        feats = region_features(project_maps(stack, q_shape, LATENT_PROJECTION))
        for i, label in enumerate(labels):
            out[grid][label] = {c: float(feats[c][i]) for c in FEATURE_COLUMNS}
    return out


def latent_scores(
    row: dict[str, Any],
    real_on_grids: dict[str, dict[str, dict[str, float]]],
    latent: LatentView,
    geometry: MelGeometry,
    settings: dict[str, Any],
) -> dict[str, float]:
    """Held-out scores on each latent grid: real regions and masks projected the same way."""
    out = {}
    strategy = AudioSpecificStrategy(
        geometry.spectrogram_shape,
        seed=group_seed(settings, row["machine_type"], row["machine_id"]) + 1,
        **row["fitted"],
    )
    rows_full, frames_full = strategy.draw_factors(4 * settings["n_masks_per_candidate"])
    for grid, (h, w) in latent.grids.items():
        held = [real_on_grids[grid][label] for label in row["holdout_files"]]
        real = {c: np.array([f[c] for f in held]) for c in FEATURE_COLUMNS}
        fitted = profile_features(
            project_axis(rows_full, h, LATENT_PROJECTION, axis=1),
            project_axis(frames_full, w, LATENT_PROJECTION, axis=1),
        )
        for name, feats in {**latent.presets[grid], "recommended": fitted}.items():
            out[f"score_{name}_{grid}"] = score(feats, real, h, w)
    return out


def recommendation_columns(preset_names: list[str], grids: list[str] = ()) -> list[str]:
    columns = [
        "machine_type",
        "machine_id",
        "status",
        "evidence",
        "n_anomaly",
        "n_regions",
        "n_fit",
        "n_holdout",
        *FIT_KEYS,
    ]
    columns += ["score_current", "score_proposed", "score_recommended"]
    for grid in grids:
        columns += [f"score_{name}_{grid}" for name in [*preset_names, "recommended"]]
    for name in [*preset_names, "recommended"]:
        if name not in ("current", "proposed", "recommended"):
            columns.append(f"score_{name}")
    for name in [*preset_names, "recommended"]:
        columns += [f"score_{name}_ci_low", f"score_{name}_ci_high"]
    for label in ("fitted_vs_best", "fitted_vs_current", "best_vs_current"):
        columns += [
            f"diff_{label}",
            f"diff_{label}_ci_low",
            f"diff_{label}_ci_high",
            f"diff_{label}_verdict",
        ]
    return columns + [
        "fit_score",
        "best_preset",
        "best_preset_fit_score",
        "multi_band_share",
        "full_clip_share",
    ]


def recommend(params: dict[str, Any], build_dir: str | Path = "build") -> Path:
    """Score presets and fit recommendations for every machine type and ID.

    Parameters
    ----------
    params
        Validated params; reads ``recommend.*``, ``data.machine_types`` and the
        mel geometry (``features.n_mels``, ``features.target_T``).
    """
    settings = params["recommend"]
    geometry = MelGeometry.from_params(params)
    build_dir = Path(build_dir)
    meta = read_masks_meta(build_dir / "masks")
    presets, grids = meta["presets"], {g: tuple(shape) for g, shape in meta["grids"].items()}
    mask_rows = read_csv(build_dir / "masks" / "features.csv")
    preset_features = {
        name: _features_of([r for r in mask_rows if r["preset"] == name]) for name in presets
    }
    latent = LatentView(grids, {})
    for grid in grids:
        grid_rows = read_csv(build_dir / "masks" / f"features_{grid}.csv")
        latent.presets[grid] = {
            name: _features_of([r for r in grid_rows if r["preset"] == name]) for name in presets
        }
    groups = []
    for machine_type in params["data"]["machine_types"]:
        rows = read_csv(build_dir / "localization" / f"{machine_type}.regions.csv")
        id_summaries = read_json(build_dir / "localization" / f"{machine_type}.json")["ids"]
        real_on_grids = latent_region_features(
            load_npz(build_dir / "localization" / f"{machine_type}.npz"), grids
        )
        groups.append((machine_type, "all", rows, id_summaries, real_on_grids))
        for machine_id in sorted({r["machine_id"] for r in rows}):
            groups.append(
                (
                    machine_type,
                    machine_id,
                    [r for r in rows if r["machine_id"] == machine_id],
                    id_summaries,
                    real_on_grids,
                )
            )
    progress = Progress("recommend: groups", len(groups))
    tasks = [(*group, preset_features, geometry, settings, latent) for group in groups]
    # Each group has its own seed, so the result does not depend on the number of processes.
    with process_pool(resolve_n_jobs(0)) as pool:
        results = []
        for row in pool.map(_recommend_task, tasks):
            results.append(row)
            progress.advance()
    progress.close()
    columns = recommendation_columns(list(presets), list(grids))
    write_csv(build_dir / "recommendations.csv", results, columns)
    write_json(
        build_dir / "recommendations.json",
        {"score_definition": SCORE_DEFINITION, "presets": presets, "rows": results},
    )
    metrics = {}
    for row in results:
        if row["machine_id"] == "all" and row.get("status") == "ok":
            metrics[row["machine_type"]] = {
                "score_recommended": row["score_recommended"],
                "score_current": row.get("score_current"),
                "score_proposed": row.get("score_proposed"),
                "best_preset": row["best_preset"],
            }
    write_json(build_dir / "metrics.json", metrics)
    return build_dir / "recommendations.csv"
