"""Stage ``recommend``: score every preset against the localized anomaly regions and fit better
ranges, per machine type and per machine ID with evidence of its own.

For each group the regions are split in a fit half and a held-out half
(:mod:`analysis.evidence`). The fitted setting is searched on the fit half
(:mod:`analysis.fit`), the closest preset is chosen on the fit half too, and every
preset and the fitted setting are scored on the held-out half with paired bootstrap
intervals (:mod:`analysis.scoring`), at spectrogram size and on every latent grid.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analysis.artifacts import (
    FITTED,
    VerdictRecord,
    is_ok,
    read_localization_arrays,
    read_localization_summary,
    read_masks_meta,
    read_region_rows,
    write_recommendations,
)
from analysis.decision import (
    REPEATED_SEARCH_SHARE,
    SplitTest,
    clips_to_settle,
    decide,
    holm_levels,
    parameter_spread,
    split_test,
)
from analysis.evidence import (
    evidence_by_id,
    evidence_halves,
    evidence_label,
    group_seed,
    pooled_label,
)
from analysis.fit import (
    FIT_KEYS,
    MIXTURE_MARGIN,
    drawn_statistics,
    fit_components,
    fit_preset,
    fitted_draw,
    mixture_draw,
)
from analysis.io import Progress
from analysis.mel import MelGeometry
from analysis.records import (
    DIFF_PARTS,
    OK_STATUS,
    RecommendationRow,
    diff_key,
    lacking_reason,
    lacking_status,
    score_key,
)
from analysis.regions import FEATURE_COLUMNS, profile_features, region_features
from analysis.scoring import (
    COMPARISONS,
    MIXTURE,
    NOISE_LEVEL,
    SCORE_DEFINITION,
    SINGLE,
    MaskPoints,
    held_out_comparison,
    preset_points,
    score,
)
from analysis.strategies.projection import LATENT_PROJECTION, project_axis, project_maps
from analysis.workers import process_pool, resolve_n_jobs
from analysis.yardstick import yardsticks

# A real region this long counts in the row's region_full_clip_share (not the fit's full-clip
# masks: those are one run over at least fit.FULL_CLIP_COVERAGE of the clip).
REGION_FULL_CLIP_COVERAGE = 0.95
# The held-out scores metrics.json holds per type with a fit (dvc metrics diff compares them).
METRIC_SCORES = tuple(score_key(n) for n in ("recommended", "current", "proposed", NOISE_LEVEL))


@dataclass(frozen=True)
class LatentView:
    """The latent grids and every preset's masks projected onto each of them (as the score sees
    them, made once)."""

    grids: dict[str, tuple[int, int]]
    presets: dict[str, dict[str, MaskPoints]]


@dataclass(frozen=True)
class GroupTask:
    """One recommendations row to compute (sent to a pool worker)."""

    machine_type: str
    machine_id: str  # "all" for the machine type's row
    rows: list[dict[str, Any]]  # parsed region rows of the group's anomalous clips
    id_summaries: dict[str, Any]  # localization summaries of the type's IDs
    real_on_grids: dict[str, dict[str, dict[str, float]]]  # see latent_region_features
    presets: dict[str, MaskPoints]  # every preset's masks as the score sees them
    geometry: MelGeometry
    settings: dict[str, Any]  # recommend params
    latent: LatentView


def not_enough_evidence(evidence: dict[str, dict[str, Any]], n_fit: int, n_held: int) -> str:
    """The status of a group without a fit half and a held-out half, with each ID's reason."""
    reasons = [
        e["reason"] if len(evidence) == 1 else f"{mid}: {e['reason']}"
        for mid, e in evidence.items()
        if e.get("reason")
    ]
    return lacking_status("; ".join(reasons) or f"{n_fit} clips to fit and {n_held} held out")


def recommend_group(
    machine_type: str,
    machine_id: str,
    rows: list[dict[str, Any]],
    id_summaries: dict[str, Any],
    preset_features: dict[str, MaskPoints],
    geometry: MelGeometry,
    settings: dict[str, Any],
) -> RecommendationRow:
    """One recommendations row: fitted ranges and every preset's held-out score with CIs.

    ``rows`` are the parsed region rows (:func:`analysis.artifacts.read_region_rows`)
    of the group's anomalous clips and ``id_summaries`` the localization summaries
    of its IDs; :func:`~analysis.evidence.id_evidence` decides per ID which evidence
    the row uses, and the row says so. ``preset_features`` are the presets' masks, made
    once for every group and split (:func:`~analysis.scoring.mask_points`).
    """
    evidence = evidence_by_id(rows, id_summaries, settings)
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
        out["status"] = not_enough_evidence(evidence, n_fit, n_held)
        return {**out, "_tests": []}
    fitted, fit_score = fit_preset(fit_real, geometry, settings, seed)
    out.update(
        {
            "status": OK_STATUS,
            "n_fit": int(n_fit),
            "n_holdout": int(n_held),
            **fitted,
            "fitted": fitted,
        }
    )
    out["fit_score"] = fit_score
    halves = (fit_real, held_out, labels)
    fit_scores, recommended = held_out_scores(out, preset_features, halves, geometry, settings)
    out["_tests"] = verdict_tests(
        out, evidence, preset_features, recommended, fit_scores, halves, geometry, settings
    )
    out.update(region_shares(fit_real, held_out))
    return out


def held_out_scores(
    out: dict[str, Any],
    preset_features: dict[str, MaskPoints],
    halves: tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, list[str]]],
    geometry: MelGeometry,
    settings: dict[str, Any],
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The closest preset (chosen on the fit half), the fitted forms (:func:`fitted_candidates`)
    and every candidate's held-out score with paired intervals, recorded in ``out``; returns
    the presets' fit-half scores and the recommended form's mask features."""
    n_mels, T = geometry.spectrogram_shape
    fit_real, held_out, labels = halves
    seed = group_seed(settings, out["machine_type"], out["machine_id"])
    # The closest preset is chosen on the fit half, then reported on the held-out half.
    fit_scores = {p: score(f, fit_real, n_mels, T) for p, f in preset_features.items()}
    best = min(fit_scores, key=lambda p: (fit_scores[p], p))
    out["best_preset"], out["best_preset_fit_score"] = best, fit_scores[best]
    candidates = dict(preset_features)
    candidates.update(
        fitted_candidates(out, fit_real, labels["fit_groups"], geometry, settings, seed)
    )
    candidates[NOISE_LEVEL] = fit_real  # the yardstick: real regions against real regions
    # A pooled region stands for all its half's clips but is one observation.
    n_independent = len(set(labels["holdout_files"]))
    groups = labels["holdout_groups"]
    out.update(
        held_out_comparison(
            candidates, held_out, groups, best, geometry, settings, seed + 2, n_independent
        )
    )
    out["holdout_files"] = labels["holdout_files"]
    out["fit_files"] = labels["fit_files"]
    return fit_scores, candidates["recommended"]


def verdict_tests(
    out: dict[str, Any],
    evidence: dict[str, dict[str, Any]],
    preset_features: dict[str, MaskPoints],
    recommended: dict[str, np.ndarray],
    fit_scores: dict[str, float],
    halves: tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, list[str]]],
    geometry: MelGeometry,
    settings: dict[str, Any],
) -> list[SplitTest]:
    """The tests the verdict rests on: the candidates (presets and the recommended form)
    ranked on the fit half and the best tested against the user's setting on the held-out
    half; on a type row whose test ran, ``recommend.n_splits - 1`` more splits
    (:func:`repeated_split`) and the absolute yardstick (recorded in ``out``). ``halves``: the
    first split's fit half, held-out half and labels (:func:`~analysis.evidence.evidence_halves`);
    ``recommended``: the fitted setting's masks in the form chosen on the fit half."""
    n_mels, T = geometry.spectrogram_shape
    fit_real, held_out, labels = halves
    seed = group_seed(settings, out["machine_type"], out["machine_id"])
    features = {**preset_features, FITTED: recommended}
    fit_scores = {**fit_scores, FITTED: score(features[FITTED], fit_real, n_mels, T)}
    # The held-out regions, their machine IDs and how many independent regions they hold.
    held = (held_out, labels["holdout_groups"], len(set(labels["holdout_files"])))
    first = split_test(fit_scores, features, *held, geometry, settings, seed + 2, out["fitted"])
    type_row = out["machine_id"] == "all"
    if type_row and first.ran:  # the absolute yardstick, on the held-out regions
        out["yardstick"] = yardsticks(features, held_out, n_mels, T, settings, seed + 5)
    # More splits where a verdict could stand on them: a type row whose first split ran a test.
    n_splits = settings["n_splits"] if type_row and first.ran else 1
    return [first] + [
        repeated_split(evidence, preset_features, geometry, settings, seed + 1009 * k, out["form"])
        for k in range(1, n_splits)
    ]


def region_shares(fit_real: dict[str, np.ndarray], held_out: dict[str, np.ndarray]) -> dict:
    """Shares of the group's regions (both halves) with two or more bands and as long as
    the clip (``REGION_FULL_CLIP_COVERAGE``)."""
    real = {c: np.concatenate([fit_real[c], held_out[c]]) for c in FEATURE_COLUMNS}
    return {
        "multi_band_share": float(np.mean(real["n_bands"] >= 2)),
        "region_full_clip_share": float(
            np.mean(real["time_coverage"] >= REGION_FULL_CLIP_COVERAGE)
        ),
    }


def repeated_split(
    evidence: dict[str, dict[str, Any]],
    preset_features: dict[str, dict[str, np.ndarray]],
    geometry: MelGeometry,
    settings: dict[str, Any],
    seed: int,
    form: str,
) -> SplitTest:
    """One more fit/held-out split of a group: its own fit (of ``form``, with
    ``REPEATED_SEARCH_SHARE`` of the search candidates, one refinement round and half the masks
    per candidate) and its own test; the presets' masks are the same in every split, and the
    fitted setting's held-out masks as many as in the first split."""
    n_mels, T = geometry.spectrogram_shape
    fit_real, held_out, labels, _ = evidence_halves(evidence, settings["fit_fraction"], seed)
    n_independent = len(set(labels["holdout_files"]))
    if fit_real[FEATURE_COLUMNS[0]].size == 0 or held_out[FEATURE_COLUMNS[0]].size == 0:
        return SplitTest(None, n_independent, None, None)
    quick = {
        **settings,
        "n_search_candidates": max(8, int(settings["n_search_candidates"] * REPEATED_SEARCH_SHARE)),
        "n_refine_rounds": min(1, settings["n_refine_rounds"]),
        "n_masks_per_candidate": max(16, settings["n_masks_per_candidate"] // 2),
    }
    fitted, _ = fit_preset(fit_real, geometry, quick, seed)
    draw = fitted_draw(fitted, geometry, settings, seed + 1)
    if form == MIXTURE:
        components = fit_components(fit_real, labels["fit_groups"], geometry, quick, seed + 3)
        if components:
            draw = fitted_draw(fitted, geometry, settings, seed + 4, components)
    features = {**preset_features, FITTED: profile_features(*draw)}
    fit_scores = {name: score(f, fit_real, n_mels, T) for name, f in features.items()}
    groups = labels["holdout_groups"]
    return split_test(
        fit_scores, features, held_out, groups, n_independent, geometry, settings, seed + 2, fitted
    )


def fitted_candidates(
    out: dict[str, Any],
    fit_real: dict[str, np.ndarray],
    fit_groups: list[str],
    geometry: MelGeometry,
    settings: dict[str, Any],
    seed: int,
) -> dict[str, dict[str, np.ndarray]]:
    """The fitted forms to score: the single setting, and for a machine type whose IDs have
    evidence of their own, the mixture of their components; ``recommended`` is the form chosen
    on the fit half (the mixture only where it is closer there by more than ``MIXTURE_MARGIN``).

    Records in ``out``: ``form``, ``mixture`` (components), ``mixture_left_out`` (IDs without
    a component) and ``drawn`` (the recommended form's masks in Hz and seconds).
    """
    n_mels, T = geometry.spectrogram_shape
    single_draw = fitted_draw(out["fitted"], geometry, settings, seed + 1)
    forms = {SINGLE: single_draw}
    components = []
    if out["machine_id"] == "all":
        components = fit_components(fit_real, fit_groups, geometry, settings, seed + 3)
        out["mixture"] = components
        with_part = {c["machine_id"] for c in components}
        out["mixture_left_out"] = sorted(set(fit_groups) - with_part) if components else []
    out["form"] = SINGLE
    if components:
        forms[MIXTURE] = fitted_draw(out["fitted"], geometry, settings, seed + 4, components)
        n = settings["n_masks_per_candidate"]
        mixture_fit = score(
            profile_features(*mixture_draw(components, geometry, n, seed)), fit_real, n_mels, T
        )
        out["mixture_fit_score"] = mixture_fit
        if mixture_fit < out["fit_score"] - MIXTURE_MARGIN:
            out["form"] = MIXTURE
    out["drawn"] = drawn_statistics(*forms[out["form"]], geometry)
    features = {name: profile_features(*draw) for name, draw in forms.items()}
    return {**features, "recommended": features[out["form"]]}


def _recommend_task(task: GroupTask) -> RecommendationRow:
    row = recommend_group(
        task.machine_type,
        task.machine_id,
        task.rows,
        task.id_summaries,
        task.presets,
        task.geometry,
        task.settings,
    )
    if is_ok(row):
        row.update(latent_scores(row, task))
    return row


def latent_region_features(
    arrays, grids: dict[str, tuple[int, int]]
) -> dict[str, dict[str, dict[str, float]]]:
    """Features of every real region (clip-level, and pooled halves) projected onto each grid
    the way masks are (``LATENT_PROJECTION``), keyed by grid and by the region's label
    (its file, or :func:`~analysis.evidence.pooled_label`)."""
    maps = dict(zip(arrays.region_files, arrays.regions, strict=True))
    for machine_id, parts in sorted(arrays.pooled.items()):
        for part in ("fit", "holdout"):
            if part in parts:
                maps[pooled_label(machine_id, part)] = parts[part]
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


def latent_scores(row: dict[str, Any], task: GroupTask) -> dict[str, float]:
    """Held-out scores on each latent grid: real regions and masks projected the same way."""
    out = {}
    seed = group_seed(task.settings, row["machine_type"], row["machine_id"]) + 1
    components = row.get("mixture") if row.get("form") == MIXTURE else None
    rows_full, frames_full = fitted_draw(
        row["fitted"], task.geometry, task.settings, seed + (3 if components else 0), components
    )
    for grid, (h, w) in task.latent.grids.items():
        held, fit = (
            {
                c: np.array([task.real_on_grids[grid][label][c] for label in labels])
                for c in FEATURE_COLUMNS
            }
            for labels in (row["holdout_files"], row["fit_files"])
        )
        out[score_key(NOISE_LEVEL, grid=grid)] = score(fit, held, h, w)
        fitted = profile_features(
            project_axis(rows_full, h, LATENT_PROJECTION, axis=1),
            project_axis(frames_full, w, LATENT_PROJECTION, axis=1),
        )
        for name, feats in {**task.latent.presets[grid], "recommended": fitted}.items():
            out[score_key(name, grid=grid)] = score(feats, held, h, w)
    return out


def finalize_verdicts(rows: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    """Every row's typed verdict (``verdict``) and, on type rows, the spread of the fitted
    parameters over the splits (``fitted_spread``): Holm over the machine types whose first
    split's test ran; an ID row is judged at the uncorrected level on one split."""
    alpha = (1 - settings["ci_level"]) / 2
    tested = {
        r["machine_type"]: r["_tests"][0].p_value()
        for r in rows
        if r["machine_id"] == "all" and r["_tests"] and r["_tests"][0].ran
    }
    levels = holm_levels(tested, alpha)
    for row in rows:
        tests = row.pop("_tests")
        share = row["n_regions"] / row["n_anomaly"] if row["n_anomaly"] else 0.0
        if not tests:
            needed = SplitTest(None, 0, None, None), None, settings["fit_fraction"], share
            row["verdict"] = VerdictRecord.untested(
                settings["user_setting"],
                lacking_reason(row["status"]),
                clips_to_settle(*needed) if share > 0 else None,
            ).to_json()
            continue
        level = levels.get(row["machine_type"]) if row["machine_id"] == "all" else alpha
        record = decide(tests, level, settings["user_setting"], settings["fit_fraction"], share)
        if record.clips_needed is not None and row["n_holdout"] > tests[0].n_independent:
            # Pooled (ID-level) regions count once per ID and half: more clips of the same IDs
            # add no independent region, so no clip count can be promised.
            record = dataclasses.replace(
                record,
                clips_needed=None,
                reason=record.reason + "; its held-out regions are pooled per ID, so more "
                "clips of the same IDs add none (IDs with clip-level regions would)",
            )
        row["verdict"] = record.to_json()
        if row["machine_id"] == "all" and len(tests) > 1:
            row["fitted_spread"] = parameter_spread(tests, FIT_KEYS)


def recommendation_columns(preset_names: list[str], grids: list[str] = ()) -> list[str]:
    """The columns of ``recommendations.csv``."""
    candidates = [*preset_names, "recommended"]
    columns = [
        "machine_type",
        "machine_id",
        "status",
        "verdict",
        "verdict_candidate",
        "verdict_stability",
        "verdict_corrected_level",
        "evidence",
        "n_anomaly",
        "n_regions",
        "n_fit",
        "n_holdout",
        *FIT_KEYS,
    ]
    first = ("current", "proposed", "recommended", NOISE_LEVEL)  # the scores read first
    columns += [score_key(name) for name in first]
    for grid in grids:
        columns += [score_key(name, grid=grid) for name in [*candidates, NOISE_LEVEL]]
    columns += [score_key(name) for name in candidates if name not in first]
    columns += ["form", score_key(SINGLE), score_key(MIXTURE), "mixture_fit_score"]
    for name in [*candidates, NOISE_LEVEL, SINGLE, MIXTURE]:
        columns += [score_key(name, "ci_low"), score_key(name, "ci_high")]
    for roles in COMPARISONS:
        columns += [diff_key(*roles, part) for part in DIFF_PARTS]
    return columns + [
        "fit_score",
        "best_preset",
        "best_preset_fit_score",
        "multi_band_share",
        "region_full_clip_share",
    ]


def type_metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``metrics.json``: per machine type its verdict, and where it has a fit the held-out
    scores, the noise level, the closest preset and the recommended form (``dvc exp show`` and
    ``dvc metrics diff`` compare these across experiments)."""
    out = {}
    for row in rows:
        if row["machine_id"] != "all":
            continue
        verdict = row["verdict"]
        out[row["machine_type"]] = {
            "verdict": verdict["kind"],
            "verdict_candidate": verdict["candidate"],
            "verdict_stability": verdict["stability_share"],
        }
        if is_ok(row):
            out[row["machine_type"]].update(
                {name: row.get(name) for name in METRIC_SCORES},
                best_preset=row["best_preset"],
                form=row.get("form"),
            )
    return out


def score_rows(rows: list[dict[str, Any]], presets: list[str]) -> list[dict[str, Any]]:
    """``scores.csv`` for ``dvc plots``: one row per machine type with a fit and candidate
    (every preset, the fitted setting, the real-vs-real noise level) with its held-out score."""
    return [
        {"machine_type": r["machine_type"], "candidate": name, "score": r.get(score_key(name))}
        for r in rows
        if r["machine_id"] == "all" and is_ok(r)
        for name in [*presets, "recommended", NOISE_LEVEL]
    ]


def group_tasks(params: dict[str, Any], build_dir: Path) -> tuple[list[GroupTask], dict, dict]:
    """One task per machine type (``all``) and per machine ID; also the presets and grids."""
    settings, geometry = params["recommend"], MelGeometry.from_params(params)
    meta = read_masks_meta(build_dir / "masks")
    presets, grids = meta["presets"], meta["grids"]
    # The presets' masks do not depend on the group or the split: their points and mask-mask
    # term are made once here, not in every score of every split.
    preset_features = preset_points(build_dir, list(presets), geometry.spectrogram_shape)
    latent = LatentView(
        grids, {g: preset_points(build_dir, list(presets), shape, g) for g, shape in grids.items()}
    )
    tasks = []
    for machine_type in params["data"]["machine_types"]:
        loc_dir = build_dir / "localization"
        rows = read_region_rows(loc_dir, machine_type)
        id_summaries = read_localization_summary(loc_dir, machine_type)["ids"]
        on_grids = latent_region_features(read_localization_arrays(loc_dir, machine_type), grids)
        groups = {"all": rows}
        for machine_id in sorted({r["machine_id"] for r in rows}):
            groups[machine_id] = [r for r in rows if r["machine_id"] == machine_id]
        tasks += [
            GroupTask(
                machine_type,
                group,
                group_rows,
                id_summaries,
                on_grids,
                preset_features,
                geometry,
                settings,
                latent,
            )
            for group, group_rows in groups.items()
        ]
    return tasks, presets, grids


def recommend(params: dict[str, Any], build_dir: str | Path = "build") -> Path:
    """Score presets and fit recommendations for every machine type and ID.

    Parameters
    ----------
    params
        Validated params; reads ``recommend.*``, ``data.machine_types`` and the
        mel geometry (``features.n_mels``, ``features.target_T``).
    """
    build_dir = Path(build_dir)
    tasks, presets, grids = group_tasks(params, build_dir)
    progress = Progress("recommend: groups", len(tasks))
    # Each group has its own seed, so the result does not depend on the number of processes.
    with process_pool(resolve_n_jobs(params["recommend"]["n_jobs"])) as pool:
        results = []
        for row in pool.map(_recommend_task, tasks):
            results.append(row)
            progress.advance()
    progress.close()
    finalize_verdicts(results, params["recommend"])
    write_recommendations(
        build_dir,
        results,
        recommendation_columns(list(presets), list(grids)),
        {"score_definition": SCORE_DEFINITION, "presets": presets},
        type_metrics(results),
        score_rows(results, list(presets)),
    )
    return build_dir / "recommendations.csv"
