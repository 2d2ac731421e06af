"""Which evidence a machine ID supports, and the fit and held-out halves it gives.

Per ID (:func:`id_evidence`): its clip-level regions where there are enough of them
and they agree with the pooled map, else its ID-level (pooled) regions where the
pooled test found one in both halves of the anomalous clips, else nothing. A
group (a machine type, or one ID) then gets fit and held-out region features from
its IDs' evidence (:func:`evidence_halves`).
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from analysis.artifacts import pooled_part, region_feature_arrays
from analysis.localization.maps import alternate_halves
from analysis.regions import FEATURE_COLUMNS


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


AGREEMENT_BINS = 3  # a clip-level region agrees with the pooled map within this many mel bins
NEGATIVE_CONTROL_REASON = (
    "left out: its negative control (half of its normal clips posing as anomalous) found a "
    "region, so nothing found in its anomalous clips can be told from its normal variation"
)


def id_evidence(
    rows: list[dict[str, Any]], id_summary: dict[str, Any], settings: dict[str, Any]
) -> dict[str, Any]:
    """Which evidence one machine ID supports, and why.

    Clip-level regions are used where the ID has at least ``min_anomaly_clips``
    of them, in at least ``min_region_share`` of its anomalous clips, and (when
    the pooled test found a region) at least half of them have their band
    centre within ``AGREEMENT_BINS`` bins of a pooled-region row. Otherwise the
    ID-level (pooled) regions are used when the pooled test found a region in
    both halves of the anomalous clips (one to fit, one to score). Otherwise
    there is not enough evidence. An ID whose negative control found a region
    supports nothing (its reason says so), whatever its regions. ``rows`` are parsed region rows
    (:func:`analysis.artifacts.read_region_rows`) of the ID's anomalous clips.
    """
    found = [r for r in rows if r["found"]]
    share = len(found) / len(rows) if rows else 0.0
    out = {"n_clip_regions": len(found), "clip_region_share": share, "agreement": None}
    if pooled_part(id_summary or {}, "negative_control").found:
        return {**out, "evidence": None, "reason": NEGATIVE_CONTROL_REASON}
    pooled = {part: pooled_part(id_summary or {}, part) for part in ("all", "fit", "holdout")}
    pooled_rows = np.array(pooled["all"].rows, dtype=float)
    agreement = None
    if pooled["all"].found and found:
        centres = np.array([r["band_centre_bin"] for r in found])
        distance = np.abs(centres[:, None] - pooled_rows[None, :]).min(axis=1)
        agreement = float(np.mean(distance <= AGREEMENT_BINS))
    enough = len(found) >= settings["min_anomaly_clips"] and share >= settings["min_region_share"]
    out["agreement"] = agreement
    if enough and (agreement is None or agreement >= 0.5):
        return {**out, "evidence": "clip-level", "found": found}
    if pooled["fit"].found and pooled["holdout"].found:
        return {**out, "evidence": "ID-level", "pooled": pooled}
    reasons = []
    if not enough:
        reasons.append(
            f"clip-level regions in {len(found)} of {len(rows)} anomalous clips (needs "
            f"{settings['min_anomaly_clips']} and a share of {settings['min_region_share']:.0%})"
        )
    elif agreement is not None:
        reasons.append(f"clip-level regions disagree with the pooled map ({agreement:.0%} agree)")
    if pooled["all"].found:
        reasons.append("a pooled region, but not in both halves of the anomalous clips")
    else:
        p_value = pooled["all"].p_value
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
    labels: dict[str, list[str]] = {
        "fit_files": [],
        "fit_groups": [],
        "holdout_files": [],
        "holdout_groups": [],
    }
    found = [r for e in evidence.values() if e["evidence"] == "clip-level" for r in e["found"]]
    if found:
        in_fit = split_halves(
            [r["file"] for r in found], [r["machine_id"] for r in found], fit_fraction, seed
        )
        real = region_feature_arrays(found)
        fit_parts.append({k: v[in_fit] for k, v in real.items()})
        held_parts.append({k: v[~in_fit] for k, v in real.items()})
        labels["fit_files"] += [r["file"] for r, f in zip(found, in_fit, strict=True) if f]
        labels["fit_groups"] += [r["machine_id"] for r, f in zip(found, in_fit, strict=True) if f]
        held = [r for r, f in zip(found, in_fit, strict=True) if not f]
        labels["holdout_files"] += [r["file"] for r in held]
        labels["holdout_groups"] += [r["machine_id"] for r in held]
    for mid, e in evidence.items():
        used[mid] = e["evidence"] or "none"
        if e["evidence"] == "ID-level":
            # Each half's pooled region stands for the clips of the half it was found on.
            n_fit, n_held = (half.size for half in alternate_halves(e["n_anomaly"]))
            fit_parts.append(_repeat_features(e["pooled"]["fit"].features, n_fit))
            held_parts.append(_repeat_features(e["pooled"]["holdout"].features, n_held))
            labels["fit_files"] += [pooled_label(mid, "fit")] * n_fit
            labels["fit_groups"] += [mid] * n_fit
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


def pooled_label(machine_id: str, part: str) -> str:
    """The label a pooled region of one half carries in fit/held-out lists."""
    return f"{machine_id}: pooled region of the {'fit' if part == 'fit' else 'held-out'} half"


def group_seed(settings: dict[str, Any], machine_type: str, machine_id: str) -> int:
    """The seed of one recommendations row (its split, search and bootstrap)."""
    return settings["seed"] * 7919 + zlib.crc32(f"{machine_type}/{machine_id}".encode())


def evidence_by_id(
    rows: list[dict[str, Any]], id_summaries: dict[str, Any], settings: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Per machine ID of a group: which evidence it supports (:func:`id_evidence`) and its
    number of anomalous clips."""
    evidence = {}
    for mid in sorted({r["machine_id"] for r in rows}):
        id_rows = [r for r in rows if r["machine_id"] == mid]
        evidence[mid] = {
            **id_evidence(id_rows, id_summaries.get(mid, {}), settings),
            "n_anomaly": len(id_rows),
        }
    return evidence
