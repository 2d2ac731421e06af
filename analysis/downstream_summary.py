"""The downstream check's numbers per machine type: AUC / pAUC per detector with intervals,
paired differences from the baseline and from the user's setting, per-ID rows, the validity
rule and the rank correlation of closeness and AUC (with the dose-response curve's shape where
the mask scores' resamples are given). numpy only; :mod:`analysis.downstream` trains."""

from __future__ import annotations

from typing import Any

import numpy as np

from analysis.detection import (
    ClipLabels,
    bootstrap_metrics,
    closeness_sentence,
    difference_verdict,
    interval,
    spearman,
    type_metrics,
    validity,
)
from analysis.dose_response import dose_response

BASELINE = "training_today"


def per_id_rows(
    machine_type: str, detector: str, setting: str, seed: int, scores, labels: ClipLabels
) -> list:
    """``downstream.csv`` rows: AUC and pAUC of one detector per machine ID."""
    rows = []
    for mid in np.unique(labels.machine_id):
        pick = labels.machine_id == mid
        a, p = type_metrics(scores[pick], ClipLabels(labels.label[pick], labels.machine_id[pick]))
        rows.append(
            {
                "machine_type": machine_type,
                "detector": detector,
                "setting": setting,
                "seed": seed,
                "machine_id": str(mid),
                "auc": round(a, 6),
                "pauc": round(p, 6),
            }
        )
    return rows


def metric_rows(
    scores: dict[str, np.ndarray], labels: ClipLabels, cfg: dict[str, Any]
) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """Per detector (``scores``: (n_seeds, n_clips) each), AUC and pAUC (mean over seeds of
    the mean over IDs) with intervals; and the bootstrap values, for paired differences."""
    level = cfg["ci_level"]
    boot = bootstrap_metrics(scores, labels, cfg["n_bootstrap"], cfg["seed"])
    rows = {}
    for name, per_seed in scores.items():
        point = np.mean([type_metrics(s, labels) for s in per_seed], axis=0)
        rows[name] = {
            "auc": float(point[0]),
            "pauc": float(point[1]),
            "auc_ci": list(interval(boot[name][:, 0], level)),
            "pauc_ci": list(interval(boot[name][:, 1], level)),
        }
    return rows, boot


def per_id_metrics(
    scores: dict[str, np.ndarray], labels: ClipLabels, cfg: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """:func:`metric_rows` of every detector within each machine ID."""
    out = {}
    for mid in np.unique(labels.machine_id):
        pick = labels.machine_id == mid
        own = ClipLabels(labels.label[pick], labels.machine_id[pick])
        if own.label.min() == own.label.max():
            continue
        out[str(mid)] = metric_rows({n: s[:, pick] for n, s in scores.items()}, own, cfg)[0]
    return out


def summarize_type(
    scores: dict[str, np.ndarray],
    references: dict[str, np.ndarray],
    labels: ClipLabels,
    mask_scores: dict[str, float | None],
    cfg: dict[str, Any],
    user_setting: str = "current",
    score_boot: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Point values, intervals, paired differences from the baseline and from
    ``user_setting`` (``recommend.user_setting``), the reference detectors,
    per-ID rows, the validity rule and the rank correlation of closeness and AUC, for one
    type (``scores``/``references``: per detector, (n_seeds, n_clips)). With ``score_boot``
    (each setting's resampled mask scores, :func:`analysis.dose_response.mask_scores`) the
    correlation's interval resamples the mask scores too and the curve's shape is named."""
    level = cfg["ci_level"]
    settings, boot = metric_rows(scores, labels, cfg)
    for name, row in settings.items():
        row["mask_score"] = mask_scores[name]
        if name != BASELINE and BASELINE in scores:
            low, high = interval(boot[name][:, 0] - boot[BASELINE][:, 0], level)
            row["auc_minus_baseline"] = row["auc"] - settings[BASELINE]["auc"]
            row["auc_minus_baseline_ci"] = [low, high]
            row["auc_minus_baseline_verdict"] = difference_verdict(low, high)
    refs = metric_rows(references, labels, cfg)[0] if references else {}
    valid, why = validity(settings, refs)
    vs_user = {}  # what page 1 combines with closeness: every setting minus the user's
    for name in settings:
        if user_setting in scores and name != user_setting:
            low, high = interval(boot[name][:, 0] - boot[user_setting][:, 0], level)
            diff = settings[name]["auc"] - settings[user_setting]["auc"]
            vs_user[name] = {"auc_difference": diff, "ci": [low, high]}
    out: dict[str, Any] = {
        "settings": settings,
        "references": refs,
        "per_id": per_id_metrics({**scores, **references}, labels, cfg),
        "valid": valid,
        "invalid_reason": why,
        "user_setting": user_setting,
        "minus_user_setting": vs_user,
        "n_test_clips": int(len(labels.label)),
    }
    out.update(rank_correlation(settings, boot, mask_scores, len(labels.label), cfg))
    ranked = [n for n in settings if mask_scores.get(n) is not None]
    if score_boot is not None and len(ranked) >= 3:
        auc = {n: settings[n]["auc"] for n in ranked}
        found = dose_response(ranked, mask_scores, score_boot, auc, boot, level)
        score_ci = found.pop("mask_score_ci")
        for name in ranked:
            settings[name]["mask_score_ci"] = score_ci[name]
        out["rank_correlation"] = found
        low, high = found["ci"]
        out["sentence"] = (
            f"{closeness_sentence(low, high, len(ranked), len(labels.label))}; "
            f"AUC against closeness: {found['shape']}"
        )
    if not valid:
        out["sentence"] = f"not valid for this type: {why}"
    return out


def rank_correlation(settings, boot, mask_scores, n_clips: int, cfg) -> dict[str, Any]:
    """The rank correlation of closeness (minus the mask score) and AUC over the settings
    with a mask score, its interval (test clips and seeds resampled), and its sentence."""
    ranked = [n for n in settings if mask_scores.get(n) is not None]
    if not ranked:
        return {"sentence": "no mask scores to rank (not enough evidence for a fit)"}
    out: dict[str, Any] = {}
    low = high = float("nan")
    if len(ranked) >= 3:
        closeness = [-mask_scores[n] for n in ranked]
        rhos = np.array(
            [
                spearman(closeness, [boot[n][b, 0] for n in ranked])
                for b in range(cfg["n_bootstrap"])
            ]
        )
        rhos = rhos[np.isfinite(rhos)]
        if len(rhos):
            low, high = interval(rhos, cfg["ci_level"])
        out["rank_correlation"] = {
            "rho": spearman(closeness, [settings[n]["auc"] for n in ranked]),
            "ci": [low, high],
            "settings": ranked,
        }
    out["sentence"] = closeness_sentence(low, high, len(ranked), n_clips)
    return out


def rank_only_with_regions(summary: dict[str, Any], n_held: int, min_regions: int) -> None:
    """Record how many independent held-out regions the settings' mask scores rest on; below
    ``min_regions`` (where recommend gives a score no interval either) the closeness ranking
    is not established, so a valid type's sentence says "not distinguishable" whatever ρ is
    (ρ's interval cannot carry the mask scores' uncertainty). An invalid type's sentence keeps
    saying only why it is not valid."""
    found = summary.get("rank_correlation", {})
    if "shape" not in found:
        return
    found["held_out_regions"] = n_held
    found["ranked"] = n_held >= min_regions  # the figure and page 1 name no shape without
    if not found["ranked"] and summary["valid"]:
        regions = "region" if n_held == 1 else "regions"
        summary["sentence"] = (
            f"not distinguishable: the settings' closeness rests on {n_held} independent "
            f"held-out {regions} (a ranking needs {min_regions})"
        )
