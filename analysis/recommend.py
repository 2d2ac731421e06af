"""Stage ``recommend``: score every preset against real anomaly regions and fit better ranges.

The score (defined once, in :func:`score`) is the mean over the features in
``SCORE_FEATURES`` of the 1-D Wasserstein distance between the preset's mask
features and the real per-clip region features, each feature mapped to [0, 1]
first (:func:`analysis.regions.score_transform`). 0 means the two
distributions are identical; lower is closer.

For each machine type (and each machine ID with enough clips) the anomaly
clips with a region are split in two halves. The fitted preset is searched on
one half: initialized from quantiles of the real features, then a random
search and a few rounds of local refinement over band fraction, band
position, number of segments and segment length (up to the whole clip), so
both "a narrow band for the whole clip" and "a few short clicks" are in
reach. Every preset and the fitted one are then scored on the other half,
with bootstrap confidence intervals over its clips.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import wasserstein_distance

from analysis.io import Progress, read_csv, read_json, write_csv, write_json
from analysis.masks import AudioSpecificStrategy, read_masks_meta
from analysis.mel import MelGeometry
from analysis.regions import FEATURE_COLUMNS, SCORE_FEATURES, profile_features, score_transform
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

SCORE_DEFINITION = (
    "score = mean over the features {features} of the 1-D Wasserstein distance between the "
    "preset's mask features and the real anomaly regions' features, after mapping each feature "
    "to [0, 1] (fractions as they are; segment lengths / T; number of segments as "
    "log(1 + n) / log(1 + T/2); number of bands as log(1 + n) / log(1 + n_mels/2)). "
    "0 means identical distributions; lower is closer."
).format(features=", ".join(SCORE_FEATURES))


def score(
    mask_features: dict[str, np.ndarray], real_features: dict[str, np.ndarray], n_mels: int, T: int
) -> float:
    """The distance between mask features and real region features (lower is closer).

    Empty masks (NaN features) are left out of the mask side.
    """
    distances = []
    for name in SCORE_FEATURES:
        m = score_transform(name, mask_features[name], n_mels, T)
        r = score_transform(name, real_features[name], n_mels, T)
        m, r = m[np.isfinite(m)], r[np.isfinite(r)]
        if m.size == 0 or r.size == 0:
            return float("nan")
        distances.append(wasserstein_distance(m, r))
    return float(np.mean(distances))


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


def bootstrap_scores(
    mask_features: dict[str, dict[str, np.ndarray]],
    real: dict[str, np.ndarray],
    n_mels: int,
    T: int,
    n_boot: int,
    level: float,
    seed: int,
) -> dict[str, tuple[float, float, float]]:
    """Score of each mask set on ``real`` with a percentile bootstrap CI over the real clips."""
    rng = np.random.default_rng(seed)
    n = real[SCORE_FEATURES[0]].size
    draws = rng.integers(0, n, size=(n_boot, n))
    out = {}
    for name, feats in mask_features.items():
        point = score(feats, real, n_mels, T)
        boots = [score(feats, {k: v[d] for k, v in real.items()}, n_mels, T) for d in draws]
        alpha = (1 - level) / 2
        out[name] = (
            point,
            float(np.nanquantile(boots, alpha)),
            float(np.nanquantile(boots, 1 - alpha)),
        )
    return out


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
    machine_type: str,
    machine_id: str,
    evidence: dict[str, dict[str, Any]],
    fit_fraction: float,
    seed: int,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, str]]:
    """Fit and held-out region features of a group from each ID's evidence.

    Clip-level IDs contribute their clips' regions, split by :func:`split_halves`.
    ID-level IDs contribute the pooled region of one half of their anomalous
    clips to the fit side and that of the other half to the held-out side, each
    counted once per clip of its half (every anomalous clip of the ID is taken
    to look like its ID's pooled region).
    """
    fit_parts, held_parts, used = [], [], {}
    found = [r for e in evidence.values() if e["evidence"] == "clip-level" for r in e["found"]]
    if found:
        in_fit = split_halves(
            [r["file"] for r in found], [r["machine_id"] for r in found], fit_fraction, seed
        )
        real = _features_of(found)
        fit_parts.append({k: v[in_fit] for k, v in real.items()})
        held_parts.append({k: v[~in_fit] for k, v in real.items()})
    for mid, e in evidence.items():
        used[mid] = e["evidence"] or "none"
        if e["evidence"] == "ID-level":
            n = e["n_anomaly"]
            fit_parts.append(_repeat_features(e["pooled"]["fit"]["features"], (n + 1) // 2))
            held_parts.append(_repeat_features(e["pooled"]["holdout"]["features"], n // 2))
    if not fit_parts:
        empty = {c: np.zeros(0) for c in FEATURE_COLUMNS}
        return empty, empty, used
    return _concat(fit_parts), _concat(held_parts), used


def evidence_label(used: dict[str, str]) -> str:
    kinds = {k for k in used.values() if k != "none"}
    if len(kinds) == 1:
        return kinds.pop()
    return "mixed: " + "; ".join(f"{mid} {kind}" for mid, kind in sorted(used.items()))


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
    seed = settings["seed"] * 7919 + zlib.crc32(f"{machine_type}/{machine_id}".encode())
    fit_real, held_out, used = evidence_halves(
        machine_type, machine_id, evidence, settings["fit_fraction"], seed
    )
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
    candidates = dict(preset_features)
    candidates["recommended"] = strategy_features(
        fitted, geometry, 4 * settings["n_masks_per_candidate"], seed + 1
    )
    scores = bootstrap_scores(
        candidates, held_out, n_mels, T, settings["n_bootstrap"], settings["ci_level"], seed + 2
    )
    out.update(
        {"status": "ok", "n_fit": int(n_fit), "n_holdout": int(n_held), **fitted, "fitted": fitted}
    )
    out["fit_score"] = fit_score
    for name, (point, lo, hi) in scores.items():
        out[f"score_{name}"], out[f"score_{name}_ci_low"], out[f"score_{name}_ci_high"] = (
            point,
            lo,
            hi,
        )
    presets_only = {k: v[0] for k, v in scores.items() if k != "recommended"}
    out["best_preset"] = min(presets_only, key=presets_only.get)
    real = _concat([fit_real, held_out])
    out["multi_band_share"] = float(np.mean(real["n_bands"] >= 2))
    out["full_clip_share"] = float(np.mean(real["time_coverage"] >= 0.95))
    return out


def _recommend_task(task: tuple) -> dict[str, Any]:
    return recommend_group(*task)


def recommendation_columns(preset_names: list[str]) -> list[str]:
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
    for name in [*preset_names, "recommended"]:
        if name not in ("current", "proposed", "recommended"):
            columns.append(f"score_{name}")
    for name in [*preset_names, "recommended"]:
        columns += [f"score_{name}_ci_low", f"score_{name}_ci_high"]
    return columns + ["fit_score", "best_preset", "multi_band_share", "full_clip_share"]


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
    presets = read_masks_meta(build_dir / "masks")["presets"]
    mask_rows = read_csv(build_dir / "masks" / "features.csv")
    preset_features = {
        name: _features_of([r for r in mask_rows if r["preset"] == name]) for name in presets
    }
    groups = []
    for machine_type in params["data"]["machine_types"]:
        rows = read_csv(build_dir / "localization" / f"{machine_type}.regions.csv")
        id_summaries = read_json(build_dir / "localization" / f"{machine_type}.json")["ids"]
        groups.append((machine_type, "all", rows, id_summaries))
        for machine_id in sorted({r["machine_id"] for r in rows}):
            groups.append(
                (
                    machine_type,
                    machine_id,
                    [r for r in rows if r["machine_id"] == machine_id],
                    id_summaries,
                )
            )
    progress = Progress("recommend: groups", len(groups))
    tasks = [(*group, preset_features, geometry, settings) for group in groups]
    # Each group has its own seed, so the result does not depend on the number of processes.
    with process_pool(resolve_n_jobs(0)) as pool:
        results = []
        for row in pool.map(_recommend_task, tasks):
            results.append(row)
            progress.advance()
    progress.close()
    columns = recommendation_columns(list(presets))
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
