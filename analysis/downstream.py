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

import shutil
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
    cell_sd_per_clip,
    per_id_standardize,
    pool_to_grid,
    zscore_scores,
)
from analysis.dose_response import mask_scores, path_settings
from analysis.downstream_summary import (
    BASELINE,
    per_id_rows,
    rank_only_with_regions,
    summarize_type,
)
from analysis.io import log
from analysis.mel import MelGeometry
from analysis.proxy_calibration import SETTINGS as CALIBRATION_SETTINGS
from analysis.proxy_calibration import calibration_result, fold_into_validity, planted_copy
from analysis.published import PUBLISHED_AUC_PCT, PUBLISHED_PAUC_PCT
from analysis.records import MaskSetting, score_key
from analysis.scoring import MIN_HOLDOUT_FOR_CI
from analysis.workers import process_pool, resolve_n_jobs

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
    train_files: tuple[str, ...]  # the train clips used (relative to train_root)
    test_files: tuple[str, ...]
    zscore: np.ndarray  # (M,) the maskless reference's clip scores
    train_root: str = ""  # the folder the train clips are under ("": data.root)


def train_logmels_of(
    params: dict[str, Any], machine_type: str, features_dir: Path, root: Path | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The type's normal train clips under ``root`` (default ``data.root``; at most
    ``max_train_clips_per_id`` per ID, sorted by ID and file), normalized as extract normalized
    the test clips, (N, n_mels, target_T); with their IDs and files (relative to ``root``).
    Clips that fail to load are left out (extract listed them already)."""
    geometry = MelGeometry.from_params(params)
    root = Path(params["data"]["root"]) if root is None else Path(root)
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
    params: dict[str, Any],
    machine_type: str,
    build_dir: Path,
    factor: int,
    train_root: Path | None = None,
) -> TypeData | None:
    """A type's train clips (under ``train_root``, default ``data.root``) and test clips on
    the grid, standardized per ID (see :func:`analysis.detection.per_id_standardize`), and the
    maskless reference's scores; None without both kinds of test clip or without train clips."""
    features_dir = build_dir / "features" / machine_type
    test = read_test_features(features_dir)
    if not len(test.label) or test.label.min() == test.label.max():
        return None
    logmel, train_ids, train_files = train_logmels_of(
        params, machine_type, features_dir, train_root
    )
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
        train_root="" if train_root is None else str(train_root),
    )


def settings_of(
    params: dict[str, Any],
    recs: dict[str, Any],
    presets: dict[str, dict],
    machine_type: str,
    shape: tuple[int, int] = (0, 0),
) -> dict[str, dict[str, Any]]:
    """The mask settings to train with for one type: ``downstream.presets`` by name,
    ``fitted`` as the type's fitted setting in its recommended form (single or mixture), and
    before it the path from the user's setting to it (``downstream.path_points`` settings in
    all, ends included; :func:`analysis.dose_response.path_settings`)."""
    row = next((r for r in type_rows(recs) if r["machine_type"] == machine_type), None)
    out: dict[str, dict[str, Any]] = {}
    # Plain mappings (MaskSetting.to_json()): what build_strategy and the path interpolation take.
    fitted = fitted_form(row).to_json() if row is not None and is_ok(row) else None
    cfg = params["downstream"]
    user = params["recommend"]["user_setting"]
    for name in cfg["presets"]:
        if name != "fitted":
            out[name] = MaskSetting.from_json(presets[name]).to_json()
        elif fitted is not None:
            if user in cfg["presets"]:
                out.update(
                    path_settings(
                        MaskSetting.from_json(presets[user]).to_json(),
                        fitted,
                        cfg["path_points"],
                        shape,
                    )
                )
            out[name] = fitted
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
    strategy = build_strategy(preset, shape, q_shape=q_shape, projection="any_cell", seed=seed)
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

    root, train_root, train_files, test_files, sr, min_duration_s, epochs, seed = task
    start = time.monotonic()
    cfg = BaselineConfig(epochs=epochs, seed=seed)

    def features(base, files):
        return [
            dcase_log_mel(load_clip(Path(base) / f, sr, min_duration_s).samples, sr, cfg)
            for f in files
        ]

    model = train_autoencoder(features(train_root or root, train_files), cfg)
    test = features(root, test_files)
    return anomaly_scores(model, test, cfg.n_frames), time.monotonic() - start


PLANTED = "planted:"  # name prefix of the calibration's proxies (analysis.proxy_calibration)
EXTRA_TRAIN_DIR = "downstream_train"  # under build/: the check's own synthetic train clips
PUBLISHED_BASELINE_EPOCHS = 100  # the DCASE 2020 baseline's published training


def proxy_jobs(params, recs, presets, data: dict[str, TypeData], geometry, q_shape) -> tuple:
    """Every (type, setting, seed) proxy task and its (type, setting, seed) label; the
    calibration's proxies (:mod:`analysis.proxy_calibration`) train on the same clips and are
    scored on the type's planted copy, under the names ``planted:matched`` / ``mismatched``."""
    cfg = params["downstream"]
    factor = geometry.spectrogram_shape[0] // q_shape[0]
    jobs, meta = [], []
    for machine_type, found in data.items():
        settings = settings_of(params, recs, presets, machine_type, geometry.spectrogram_shape)
        planted = planted_copy(
            found,
            geometry.spectrogram_shape,
            factor,
            zlib.crc32(f"{cfg['seed']}/{machine_type}/planted".encode()),
            cfg["perturbation"],
            cfg["max_shift_bins"],
        )
        todo = [(name, preset, found) for name, preset in settings.items()]
        if planted is not None:
            todo += [(PLANTED + n, shape, planted) for n, shape in CALIBRATION_SETTINGS.items()]
        for name, preset, clips in todo:
            for k in range(cfg["seeds"]):
                seed = zlib.crc32(f"{cfg['seed']}/{machine_type}/{name}/{k}".encode())
                jobs.append((preset, geometry.spectrogram_shape, q_shape, clips, cfg, seed))
                meta.append((machine_type, name, k))
    return jobs, meta


def extra_train_root(params: dict[str, Any], build_dir: Path) -> Path | None:
    """Where the check's own normal train clips are: on the synthetic default (DCASE 2020
    layout) with ``downstream.synthetic_train_clips_per_id`` > 0, that many clips per ID
    written under ``build/downstream_train`` (same machines, a random stream of their own);
    else None (the data set's train clips)."""
    n = params["downstream"]["synthetic_train_clips_per_id"]
    root = Path(params["data"]["root"])
    if not n or not (root / "synthetic.json").is_file():
        return None
    if params["synthetic"]["layout"] != "dcase2020":
        log("downstream: synthetic_train_clips_per_id applies to the dcase2020 layout only")
        return None
    from analysis.synthetic_clips import write_train_clips  # here: only the enabled check needs it

    out = build_dir / EXTRA_TRAIN_DIR
    shutil.rmtree(out, ignore_errors=True)
    write_train_clips(params, out, n)
    for machine_type in params["data"]["machine_types"]:
        (out / machine_type / "test").mkdir(parents=True, exist_ok=True)  # the layout needs it
    return out


def load_types(
    params: dict[str, Any], build_dir: Path, factor: int, train_root: Path | None = None
) -> dict[str, TypeData]:
    """Every machine type's :class:`TypeData`; a type without the clips it needs is skipped
    with a progress line."""
    data: dict[str, TypeData] = {}
    for machine_type in params["data"]["machine_types"]:
        found = type_data(params, machine_type, build_dir, factor, train_root)
        if found is None:
            log(f"downstream {machine_type}: skipped (needs train, normal and anomalous clips)")
            continue
        data[machine_type] = found
    return data


def run_detectors(params, data: dict[str, TypeData], jobs, meta, sr: int) -> tuple:
    """Train and score every proxy (``jobs``) and each type's baseline autoencoder in one pool;
    returns the proxy scores per type and setting (the calibration's under ``planted:``
    names), the references' scores per type, the CSV rows and the proxy's parameter count."""
    cfg = params["downstream"]
    scores: dict[str, dict[str, list[np.ndarray]]] = {}
    references: dict[str, dict[str, np.ndarray]] = {}
    rows, parameter_counts = [], set()
    root, min_s = params["data"]["root"], params["features"]["min_duration_s"]
    with process_pool(resolve_n_jobs(cfg["n_jobs"])) as pool:
        ae = {
            t: pool.submit(
                _baseline_ae,
                (
                    root,
                    d.train_root,
                    d.train_files,
                    d.test_files,
                    sr,
                    min_s,
                    cfg["baseline_epochs"],
                    cfg["seed"],
                ),
            )
            for t, d in data.items()
        }
        for n_done, ((machine_type, name, k), (clip_scores, n_params, seconds)) in enumerate(
            zip(meta, pool.map(_train_and_score, jobs), strict=True), 1
        ):
            log(
                f"downstream {n_done}/{len(jobs)} {machine_type} / {name} / seed {k}: "
                f"{seconds:.1f} s"
            )
            parameter_counts.add(n_params)  # one architecture: the same count every time
            scores.setdefault(machine_type, {}).setdefault(name, []).append(clip_scores)
            if not name.startswith(PLANTED):
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


def type_summary(params, build_dir: Path, recs, machine_type: str, per_setting, data, refs):
    """One type's :func:`summarize_type` with every setting's held-out mask score and its
    resamples (:func:`analysis.dose_response.mask_scores`; the recommendations' scores where
    there is no held-out half) and the calibration folded into validity."""
    cfg = params["downstream"]
    planted = {
        n[len(PLANTED) :]: np.stack(v) for n, v in per_setting.items() if n.startswith(PLANTED)
    }
    trained = {n: np.stack(v) for n, v in per_setting.items() if not n.startswith(PLANTED)}
    shape = MelGeometry.from_params(params).spectrogram_shape
    settings = settings_of(params, recs, params["masks"]["presets"], machine_type, shape)
    found = mask_scores(params, build_dir, machine_type, {n: settings[n] for n in trained})
    if found is None:
        points, score_boot, n_held = mask_scores_of(recs, machine_type, trained), None, 0
    else:
        points, score_boot, n_held = found
    summary = summarize_type(
        trained, refs, data.labels, points, cfg, params["recommend"]["user_setting"], score_boot
    )
    rank_only_with_regions(summary, n_held, MIN_HOLDOUT_FOR_CI)
    if len(planted) == len(CALIBRATION_SETTINGS):
        half = len(planted["matched"][0]) // 2
        labels = ClipLabels(
            np.repeat([0, 1], half),
            np.concatenate([data.labels.machine_id[data.labels.label == 0]] * 2),
        )
        fold_into_validity(summary, calibration_result(planted, labels, cfg))
    summary["n_train_clips"] = len(data.train_files)
    summary["train_clips_per_id"] = dict(Counter(str(m) for m in data.train_ids))
    summary["published_baseline"] = PUBLISHED_BASELINE.get(machine_type)
    return summary


def downstream(params: dict[str, Any], build_dir: str | Path = "build") -> Path:
    """Train and score proxy detectors and the reference detectors; write
    ``build/downstream.json`` and ``.csv``.

    Parameters
    ----------
    params
        Validated params; reads ``downstream.*``, ``masks.q_grids``, the mel geometry,
        ``recommend.*`` (the held-out half and its bootstrap) and ``synthetic.*``.
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
    train_root = extra_train_root(params, build_dir)
    data = load_types(params, build_dir, factor, train_root)
    jobs, meta = proxy_jobs(params, recs, presets, data, geometry, q_shape)
    log(
        f"downstream: {len(jobs)} proxy detectors ({cfg['steps']} steps of {cfg['batch_size']}) "
        f"and {len(data)} baseline autoencoders ({cfg['baseline_epochs']} epochs)"
    )
    scores, references, rows, n_parameters = run_detectors(params, data, jobs, meta, geometry.sr)
    if train_root is not None:
        shutil.rmtree(train_root, ignore_errors=True)  # deterministic: written again when needed
    by_type = {
        t: type_summary(params, build_dir, recs, t, per_setting, data[t], references[t])
        for t, per_setting in scores.items()
    }
    record = {
        "enabled": True,
        "how_to_run": HOW_TO_RUN,
        "perturbation": cfg["perturbation"],
        "n_parameters": n_parameters,
        "grid": list(q_shape),
        "baseline": BASELINE,
        "baseline_epochs": cfg["baseline_epochs"],
        "baseline_epochs_published": PUBLISHED_BASELINE_EPOCHS,
        "train_clips_written": train_root is not None,
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
