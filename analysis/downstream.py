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
    fitted_form,
    is_ok,
    read_masks_meta,
    read_recommendations,
    read_test_features,
    read_train_stats,
    type_rows,
    write_downstream,
)
from analysis.audio import STD_FLOOR_DB, log_mels_of_files, normalize_clip
from analysis.dcase import discover_clips
from analysis.detection import (
    ClipLabels,
    bootstrap_metrics,
    cell_sd_per_clip,
    closeness_sentence,
    difference_verdict,
    interval,
    per_id_standardize,
    pool_to_grid,
    spearman,
    type_metrics,
    validity,
    zscore_scores,
)
from analysis.io import log
from analysis.mel import MelGeometry
from analysis.published import PUBLISHED_AUC_PCT, PUBLISHED_PAUC_PCT
from analysis.records import MaskSetting, score_key
from analysis.workers import process_pool, resolve_n_jobs

BASELINE = "training_today"
HOW_TO_RUN = "dvc exp run -S downstream.enabled=true"
CSV_COLUMNS = ("machine_type", "detector", "setting", "seed", "machine_id", "auc", "pauc")
REFERENCES = ("baseline_ae", "zscore")  # the reference detectors, in the order shown
# The DCASE 2020 Task 2 baseline on the real development set (AUC %, pAUC %; the task's
# published results): a different data set from the one analysed, quoted for scale only.
PUBLISHED_BASELINE = {t: (PUBLISHED_AUC_PCT[t], PUBLISHED_PAUC_PCT[t]) for t in PUBLISHED_AUC_PCT}


@dataclass(frozen=True)
class TypeData:
    """One machine type's clips as the proxy detectors see them (on the latent grid)."""

    train: np.ndarray  # (N, H, W) normal train clips, standardized per ID, sorted by ID
    train_ids: np.ndarray  # (N,) their machine IDs
    cell_sd: np.ndarray  # (N,) within-ID cell SD of each train clip
    test: np.ndarray  # (M, H, W) test clips, standardized with their ID's train statistics
    real_cols: np.ndarray  # (M,) grid columns of real (unpadded) frames
    labels: ClipLabels
    train_files: tuple[str, ...]  # the train clips used (relative to data.root)
    test_files: tuple[str, ...]
    zscore: np.ndarray  # (M,) the maskless reference's clip scores


def train_logmels_of(
    params: dict[str, Any], machine_type: str, features_dir: Path
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The type's normal train clips (at most ``max_train_clips_per_id`` per ID, sorted by ID
    and file), normalized as extract normalized the test clips, (N, n_mels, target_T); with
    their IDs and files. Clips that fail to load are left out (extract listed them already)."""
    geometry = MelGeometry.from_params(params)
    root = Path(params["data"]["root"])
    stats = read_train_stats(features_dir)
    cap = params["downstream"]["max_train_clips_per_id"]
    clips, _ = discover_clips(root, machine_type, params["data"]["layout"])
    chosen, per_id = [], Counter()
    train = sorted((c for c in clips if c.split == "train"), key=lambda c: (c.machine_id, c.file))
    for clip in train:
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
    return logmel, np.array([c.machine_id for c in used]), [c.file for c in used]


def type_data(
    params: dict[str, Any], machine_type: str, build_dir: Path, factor: int
) -> TypeData | None:
    """A type's train and test clips on the grid, standardized per ID (see
    :func:`analysis.detection.per_id_standardize`), and the maskless reference's scores;
    None without both kinds of test clip or without train clips."""
    features_dir = build_dir / "features" / machine_type
    test = read_test_features(features_dir)
    if not len(test.label) or test.label.min() == test.label.max():
        return None
    logmel, train_ids, train_files = train_logmels_of(params, machine_type, features_dir)
    if not len(train_files):
        return None
    train, test_grid = per_id_standardize(
        pool_to_grid(logmel, factor), train_ids, pool_to_grid(test.logmel, factor), test.machine_id
    )
    return TypeData(
        train=train,
        train_ids=train_ids,
        cell_sd=cell_sd_per_clip(train, train_ids),
        test=test_grid,
        real_cols=np.maximum(test.n_frames // factor, 1),
        labels=ClipLabels(test.label, test.machine_id),
        train_files=tuple(train_files),
        test_files=tuple(str(f) for f in test.file),
        zscore=zscore_scores(logmel, train_ids, test.logmel, test.machine_id, test.n_frames),
    )


def settings_of(
    params: dict[str, Any], recs: dict[str, Any], presets: dict[str, dict], machine_type: str
) -> dict[str, MaskSetting]:
    """The mask settings to train with for one type: ``downstream.presets`` by name, and
    ``fitted`` as the type's fitted setting in its recommended form (single or mixture)."""
    row = next((r for r in type_rows(recs) if r["machine_type"] == machine_type), None)
    out = {}
    for name in params["downstream"]["presets"]:
        if name != "fitted":
            out[name] = MaskSetting.from_json(presets[name])
        elif row is not None and is_ok(row):
            out[name] = fitted_form(row)
    return out


def mask_scores_of(recs: dict[str, Any], machine_type: str, names) -> dict[str, float | None]:
    """The held-out mask score of every setting (None where the type has no fit)."""
    row = next((r for r in type_rows(recs) if r["machine_type"] == machine_type), {})
    if not is_ok(row):
        return dict.fromkeys(names)
    return {n: row.get(score_key("recommended" if n == "fitted" else n)) for n in names}


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
    strategy = build_strategy(
        preset.to_json(), shape, q_shape=q_shape, projection="any_cell", seed=seed
    )
    draw = lambda b: strategy(b, "cpu")  # noqa: E731
    model = train_detector(data.train, data.cell_sd, draw, proxy, seed, groups=data.train_ids)
    scores = clip_scores(model, data.test, data.real_cols, proxy.score_quantile)
    return scores, model.n_parameters, time.monotonic() - start


def _baseline_ae(task: tuple) -> tuple[np.ndarray, float]:
    """One type's DCASE 2020 baseline autoencoder in a worker (:mod:`analysis.baseline_ae`,
    the published feature on the clips' audio): trained on the type's train clips, it scores
    the test clips. Returns the scores (test order) and the seconds it took."""
    from analysis.audio import load_clip
    from analysis.baseline_ae import (
        BaselineConfig,
        anomaly_scores,
        dcase_log_mel,
        train_autoencoder,
    )

    root, train_files, test_files, sr, min_duration_s, epochs, seed = task
    start = time.monotonic()
    cfg = BaselineConfig(epochs=epochs, seed=seed)

    def features(files):
        return [
            dcase_log_mel(load_clip(Path(root) / f, sr, min_duration_s).samples, sr, cfg)
            for f in files
        ]

    model = train_autoencoder(features(train_files), cfg)
    return anomaly_scores(model, features(test_files), cfg.n_frames), time.monotonic() - start


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
) -> dict[str, Any]:
    """Point values, intervals, paired differences from the baseline and from
    ``user_setting`` (``recommend.user_setting``), the reference detectors,
    per-ID rows, the validity rule and the rank correlation of closeness and AUC, for one
    type (``scores``/``references``: per detector, (n_seeds, n_clips))."""
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


def proxy_jobs(params, recs, presets, data: dict[str, TypeData], geometry, q_shape) -> tuple:
    """Every (type, setting, seed) proxy task and its (type, setting, seed) label."""
    cfg = params["downstream"]
    jobs, meta = [], []
    for machine_type, found in data.items():
        for name, preset in settings_of(params, recs, presets, machine_type).items():
            for k in range(cfg["seeds"]):
                seed = zlib.crc32(f"{cfg['seed']}/{machine_type}/{name}/{k}".encode())
                jobs.append((preset, geometry.spectrogram_shape, q_shape, found, cfg, seed))
                meta.append((machine_type, name, k))
    return jobs, meta


def load_types(params: dict[str, Any], build_dir: Path, factor: int) -> dict[str, TypeData]:
    """Every machine type's :class:`TypeData`; a type without the clips it needs is skipped
    with a progress line."""
    data: dict[str, TypeData] = {}
    for machine_type in params["data"]["machine_types"]:
        found = type_data(params, machine_type, build_dir, factor)
        if found is None:
            log(f"downstream {machine_type}: skipped (needs train, normal and anomalous clips)")
            continue
        data[machine_type] = found
    return data


def run_detectors(params, data: dict[str, TypeData], jobs, meta, sr: int) -> tuple:
    """Train and score every proxy (``jobs``) and each type's baseline autoencoder in one pool;
    returns the proxy scores per type and setting, the references' scores per type, the CSV
    rows and the proxy's parameter count."""
    cfg = params["downstream"]
    scores: dict[str, dict[str, list[np.ndarray]]] = {}
    references: dict[str, dict[str, np.ndarray]] = {}
    rows, parameter_counts = [], set()
    root, min_s = params["data"]["root"], params["features"]["min_duration_s"]
    with process_pool(resolve_n_jobs(cfg["n_jobs"])) as pool:
        ae = {
            t: pool.submit(
                _baseline_ae,
                (root, d.train_files, d.test_files, sr, min_s, cfg["baseline_epochs"], cfg["seed"]),
            )
            for t, d in data.items()
        }
        for (machine_type, name, k), (clip_scores, n_params, seconds) in zip(
            meta, pool.map(_train_and_score, jobs), strict=True
        ):
            log(f"downstream {machine_type} / {name} / seed {k}: {seconds:.1f} s")
            parameter_counts.add(n_params)  # one architecture: the same count every time
            scores.setdefault(machine_type, {}).setdefault(name, []).append(clip_scores)
            labels = data[machine_type].labels
            rows += per_id_rows(machine_type, "proxy", name, k, clip_scores, labels)
        for machine_type, future in ae.items():
            ae_scores, seconds = future.result()
            log(f"downstream {machine_type} / baseline autoencoder: {seconds:.1f} s")
            own = {"baseline_ae": ae_scores[None], "zscore": data[machine_type].zscore[None]}
            references[machine_type] = own
            for ref, ref_scores in own.items():
                rows += per_id_rows(
                    machine_type, ref, "", 0, ref_scores[0], data[machine_type].labels
                )
    return scores, references, rows, max(parameter_counts, default=None)


def downstream(params: dict[str, Any], build_dir: str | Path = "build") -> Path:
    """Train and score proxy detectors and the reference detectors; write
    ``build/downstream.json`` and ``.csv``.

    Parameters
    ----------
    params
        Validated params; reads ``downstream.*``, ``masks.q_grids``, the mel geometry and
        ``recommend.user_setting``.
    """
    build_dir = Path(build_dir)
    cfg = params["downstream"]
    if not cfg["enabled"]:
        write_downstream(build_dir, {"enabled": False, "how_to_run": HOW_TO_RUN}, [], CSV_COLUMNS)
        log(f"downstream: not run (downstream.enabled is false; {HOW_TO_RUN})")
        return build_dir / "downstream.json"
    geometry = MelGeometry.from_params(params)
    grids = params["masks"]["q_grids"]
    factor = grids.get("q_bot", min(grids.values()))
    q_shape = geometry.q_shape(factor)
    recs = read_recommendations(build_dir / "recommendations.json")
    presets = read_masks_meta(build_dir / "masks")["presets"]
    data = load_types(params, build_dir, factor)
    jobs, meta = proxy_jobs(params, recs, presets, data, geometry, q_shape)
    log(
        f"downstream: {len(jobs)} proxy detectors ({cfg['steps']} steps of {cfg['batch_size']}) "
        f"and {len(data)} baseline autoencoders ({cfg['baseline_epochs']} epochs)"
    )
    scores, references, rows, n_parameters = run_detectors(params, data, jobs, meta, geometry.sr)
    by_type = {}
    for t, per_setting in scores.items():
        by_type[t] = summarize_type(
            {n: np.stack(v) for n, v in per_setting.items()},
            references[t],
            data[t].labels,
            mask_scores_of(recs, t, per_setting),
            cfg,
            params["recommend"]["user_setting"],
        )
        by_type[t]["n_train_clips"] = len(data[t].train_files)
        by_type[t]["published_baseline"] = PUBLISHED_BASELINE.get(t)
    record = {
        "enabled": True,
        "how_to_run": HOW_TO_RUN,
        "perturbation": cfg["perturbation"],
        "n_parameters": n_parameters,
        "grid": list(q_shape),
        "baseline": BASELINE,
        "baseline_epochs": cfg["baseline_epochs"],
        "ci_level": cfg["ci_level"],
        "types": by_type,
    }
    write_downstream(build_dir, _rounded(record), rows, CSV_COLUMNS)
    for machine_type, summary in by_type.items():
        log(f"downstream {machine_type}: {summary['sentence']}")
    return build_dir / "downstream.json"


def _rounded(value: Any) -> Any:
    """Floats to 6 decimals (stable JSON bytes across platforms' last-bit differences)."""
    if isinstance(value, float):
        return round(value, 6) if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value
