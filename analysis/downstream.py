"""Stage ``downstream``: does closer mean better? A proxy detector per mask setting.

Per machine type and mask setting (``downstream.presets``; ``fitted`` is the type's fitted
setting in its recommended form), :mod:`analysis.proxy` trains a small detector on the type's
normal train clips with anomalies inside masks drawn by the setting's strategy, called as
training code calls it, on the ``q_bot`` grid. The test clips give AUC and pAUC per ID,
their mean per type with paired intervals (test clips and training seeds resampled), the
difference of every setting from ``training_today``, and the rank correlation between
closeness (minus the held-out mask score) and AUC.

Off by default (``downstream.enabled``): then it writes a "not run" record that says how to
run it. Writes ``build/downstream.json`` and ``build/downstream.csv`` (no timings in either,
so they are the same bytes on every run; progress lines carry the times).
"""

from __future__ import annotations

import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analysis.artifacts import (
    is_ok,
    read_masks_meta,
    read_recommendations,
    read_test_features,
    read_train_stats,
    type_rows,
)
from analysis.dcase import discover_clips
from analysis.detection import (
    ClipLabels,
    bootstrap_metrics,
    cell_sd_per_clip,
    closeness_sentence,
    difference_verdict,
    interval,
    pool_to_grid,
    spearman,
    type_metrics,
)
from analysis.extract import STD_FLOOR_DB, log_mels_of_files, normalize_clip
from analysis.io import log, write_csv, write_json
from analysis.mel import MelGeometry
from analysis.workers import process_pool, resolve_n_jobs

BASELINE = "training_today"
HOW_TO_RUN = "dvc exp run -S downstream.enabled=true"
CSV_COLUMNS = ("machine_type", "setting", "seed", "machine_id", "auc", "pauc")


@dataclass(frozen=True)
class TypeData:
    """One machine type's clips as the proxy detectors see them (on the latent grid)."""

    train: np.ndarray  # (N, H, W) normal train clips
    cell_sd: np.ndarray  # (N,) within-ID cell SD of each train clip
    test: np.ndarray  # (M, H, W) test clips
    real_cols: np.ndarray  # (M,) grid columns of real (unpadded) frames
    labels: ClipLabels


def train_grid_of(
    params: dict[str, Any], machine_type: str, features_dir: Path, factor: int
) -> tuple[np.ndarray, np.ndarray]:
    """The type's normal train clips (at most ``max_train_clips_per_id`` per ID, in file
    order), normalized as extract normalized the test clips and pooled onto the grid; with
    their IDs. Clips that fail to load are left out (extract has listed them already)."""
    geometry = MelGeometry.from_params(params)
    root = Path(params["data"]["root"])
    stats = read_train_stats(features_dir)
    cap = params["downstream"]["max_train_clips_per_id"]
    clips, _ = discover_clips(root, machine_type, params["data"]["layout"])
    chosen, per_id = [], Counter()
    for clip in sorted((c for c in clips if c.split == "train"), key=lambda c: c.file):
        if per_id[clip.machine_id] < cap:
            chosen.append(clip)
            per_id[clip.machine_id] += 1
    loaded = log_mels_of_files(
        str(root), [c.file for c in chosen], geometry, params["features"]["min_duration_s"], True
    )
    used = [c for c, (_, reason) in zip(chosen, loaded.statuses, strict=True) if not reason]
    mean = stats.mean.astype(np.float32)
    divisor = np.maximum(stats.std, STD_FLOOR_DB).astype(np.float32)
    mode = params["features"]["normalization"]
    logmel = np.stack([normalize_clip(x, geometry, mode, mean, divisor) for x in loaded.logmels])
    return pool_to_grid(logmel, factor), np.array([c.machine_id for c in used])


def type_data(
    params: dict[str, Any], machine_type: str, build_dir: Path, factor: int
) -> TypeData | None:
    """A type's train and test clips on the grid; None without both kinds of test clip."""
    features_dir = build_dir / "features" / machine_type
    test = read_test_features(features_dir)
    if not len(test.label) or test.label.min() == test.label.max():
        return None
    train, train_ids = train_grid_of(params, machine_type, features_dir, factor)
    return TypeData(
        train=train,
        cell_sd=cell_sd_per_clip(train, train_ids),
        test=pool_to_grid(test.logmel, factor),
        real_cols=np.maximum(test.n_frames // factor, 1),
        labels=ClipLabels(test.label, test.machine_id),
    )


def settings_of(
    params: dict[str, Any], recs: dict[str, Any], presets: dict[str, dict], machine_type: str
) -> dict[str, dict[str, Any]]:
    """The mask settings to train with for one type: ``downstream.presets`` by name, and
    ``fitted`` as the type's fitted setting in its recommended form (single or mixture)."""
    row = next((r for r in type_rows(recs) if r["machine_type"] == machine_type), None)
    out = {}
    for name in params["downstream"]["presets"]:
        if name != "fitted":
            out[name] = presets[name]
        elif row is not None and is_ok(row):
            if row.get("form") == "mixture":
                out[name] = {"kind": "mixture", "components": row["mixture"]}
            else:
                out[name] = {"kind": "audio_specific", **row["fitted"]}
    return out


def mask_scores_of(recs: dict[str, Any], machine_type: str, names) -> dict[str, float | None]:
    """The held-out mask score of every setting (None where the type has no fit)."""
    row = next((r for r in type_rows(recs) if r["machine_type"] == machine_type), {})
    if not is_ok(row):
        return dict.fromkeys(names)
    return {n: row.get("score_recommended" if n == "fitted" else f"score_{n}") for n in names}


def _train_and_score(task: tuple) -> tuple[np.ndarray, int, float]:
    """One (type, setting, seed) in a worker: train a proxy detector with the setting's
    strategy (called as training code calls it, on the grid), score the test clips. Returns
    the scores, the detector's parameter count and the seconds it took."""
    # torch is imported here only: a stage that is off, or the parent process, never loads it.
    from analysis.proxy import ProxyConfig, clip_scores, train_detector
    from analysis.strategies.factory import build_strategy

    preset, shape, q_shape, data, cfg, seed = task
    start = time.monotonic()
    proxy = ProxyConfig(
        steps=cfg["steps"],
        batch_size=cfg["batch_size"],
        learning_rate=cfg["learning_rate"],
        channels=cfg["channels"],
        perturbation=cfg["perturbation"],
        additive_sd=tuple(cfg["additive_sd"]),
        max_shift_bins=cfg["max_shift_bins"],
        score_quantile=cfg["score_quantile"],
    )
    strategy = build_strategy(preset, shape, q_shape=q_shape, projection="any_cell", seed=seed)
    model = train_detector(data.train, data.cell_sd, lambda b: strategy(b, "cpu"), proxy, seed)
    scores = clip_scores(model, data.test, data.real_cols, proxy.score_quantile)
    return scores, model.n_parameters, time.monotonic() - start


def per_id_rows(machine_type: str, setting: str, seed: int, scores, labels: ClipLabels) -> list:
    """``downstream.csv`` rows: AUC and pAUC of one detector per machine ID."""
    rows = []
    for mid in np.unique(labels.machine_id):
        pick = labels.machine_id == mid
        a, p = type_metrics(scores[pick], ClipLabels(labels.label[pick], labels.machine_id[pick]))
        rows.append(
            {
                "machine_type": machine_type,
                "setting": setting,
                "seed": seed,
                "machine_id": str(mid),
                "auc": round(a, 6),
                "pauc": round(p, 6),
            }
        )
    return rows


def summarize_type(
    scores: dict[str, np.ndarray],
    labels: ClipLabels,
    mask_scores: dict[str, float | None],
    cfg: dict[str, Any],
) -> dict[str, Any]:
    """Point values, intervals, paired differences from the baseline, and the rank
    correlation of closeness and AUC, for one type's settings (``scores``: per setting,
    (n_seeds, n_clips))."""
    level = cfg["ci_level"]
    boot = bootstrap_metrics(scores, labels, cfg["n_bootstrap"], cfg["seed"])
    points = {
        name: np.mean([type_metrics(s, labels) for s in per_seed], axis=0)
        for name, per_seed in scores.items()
    }
    settings = {}
    for name, point in points.items():
        row = {"auc": float(point[0]), "pauc": float(point[1]), "mask_score": mask_scores[name]}
        row["auc_ci"] = list(interval(boot[name][:, 0], level))
        row["pauc_ci"] = list(interval(boot[name][:, 1], level))
        if name != BASELINE and BASELINE in scores:
            low, high = interval(boot[name][:, 0] - boot[BASELINE][:, 0], level)
            row["auc_minus_baseline"] = float(point[0] - points[BASELINE][0])
            row["auc_minus_baseline_ci"] = [low, high]
            row["auc_minus_baseline_verdict"] = difference_verdict(low, high)
        settings[name] = row
    out: dict[str, Any] = {"settings": settings, "n_test_clips": int(len(labels.label))}
    ranked = [n for n in scores if mask_scores.get(n) is not None]
    if not ranked:
        out["sentence"] = "no mask scores to rank (not enough evidence for a fit)"
        return out
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
            low, high = interval(rhos, level)
        out["rank_correlation"] = {
            "rho": spearman(closeness, [settings[n]["auc"] for n in ranked]),
            "ci": [low, high],
            "settings": ranked,
        }
    out["sentence"] = closeness_sentence(low, high, len(ranked), len(labels.label))
    return out


def downstream(params: dict[str, Any], build_dir: str | Path = "build") -> Path:
    """Train and score proxy detectors; write ``build/downstream.json`` and ``.csv``.

    Parameters
    ----------
    params
        Validated params; reads ``downstream.*``, ``masks.q_grids`` and the mel geometry.
    """
    build_dir = Path(build_dir)
    cfg = params["downstream"]
    out = build_dir / "downstream.json"
    if not cfg["enabled"]:
        write_json(out, {"enabled": False, "how_to_run": HOW_TO_RUN})
        write_csv(build_dir / "downstream.csv", [], CSV_COLUMNS)
        log(f"downstream: not run (downstream.enabled is false; {HOW_TO_RUN})")
        return out
    geometry = MelGeometry.from_params(params)
    grids = params["masks"]["q_grids"]
    factor = grids.get("q_bot", min(grids.values()))
    q_shape = geometry.q_shape(factor)
    recs = read_recommendations(build_dir / "recommendations.json")
    presets = read_masks_meta(build_dir / "masks")["presets"]
    data: dict[str, TypeData] = {}
    jobs, meta = [], []
    for machine_type in params["data"]["machine_types"]:
        found = type_data(params, machine_type, build_dir, factor)
        if found is None:
            log(f"downstream {machine_type}: skipped (needs normal and anomalous test clips)")
            continue
        data[machine_type] = found
        for name, preset in settings_of(params, recs, presets, machine_type).items():
            for k in range(cfg["seeds"]):
                seed = zlib.crc32(f"{cfg['seed']}/{machine_type}/{name}/{k}".encode())
                jobs.append((preset, geometry.spectrogram_shape, q_shape, found, cfg, seed))
                meta.append((machine_type, name, k))
    log(f"downstream: {len(jobs)} detectors, {cfg['steps']} steps of {cfg['batch_size']} each")
    scores: dict[str, dict[str, list[np.ndarray]]] = {}
    rows, parameter_counts = [], set()
    with process_pool(resolve_n_jobs(cfg["n_jobs"])) as pool:
        for (machine_type, name, k), (clip_scores, n_params, seconds) in zip(
            meta, pool.map(_train_and_score, jobs), strict=True
        ):
            log(f"downstream {machine_type} / {name} / seed {k}: {seconds:.1f} s")
            parameter_counts.add(n_params)  # one architecture: the same count every time
            scores.setdefault(machine_type, {}).setdefault(name, []).append(clip_scores)
            rows += per_id_rows(machine_type, name, k, clip_scores, data[machine_type].labels)
    by_type = {
        t: summarize_type(
            {n: np.stack(v) for n, v in per_setting.items()},
            data[t].labels,
            mask_scores_of(recs, t, per_setting),
            cfg,
        )
        for t, per_setting in scores.items()
    }
    record = {
        "enabled": True,
        "perturbation": cfg["perturbation"],
        "n_parameters": max(parameter_counts, default=None),
        "grid": list(q_shape),
        "baseline": BASELINE,
        "ci_level": cfg["ci_level"],
        "types": by_type,
    }
    write_json(out, _rounded(record))
    write_csv(build_dir / "downstream.csv", rows, CSV_COLUMNS)
    for machine_type, summary in by_type.items():
        log(f"downstream {machine_type}: {summary['sentence']}")
    return out


def _rounded(value: Any) -> Any:
    """Floats to 6 decimals (stable JSON bytes across platforms' last-bit differences)."""
    if isinstance(value, float):
        return round(value, 6) if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value
