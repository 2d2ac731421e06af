"""Detection metrics and the proxy detector's data preparation, in numpy (no torch).

AUC and DCASE's pAUC (FPR <= 0.1) per machine ID and their mean per type; a paired bootstrap
over test clips and training seeds; the rank correlation of closeness and AUC and the
sentence it supports; the log-mel pooled onto a latent grid and the within-ID cell SD.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def pool_to_grid(logmel: np.ndarray, factor: int) -> np.ndarray:
    """(N, n_mels, T) log-mels averaged over ``factor`` x ``factor`` cells (the grid DSR's
    anomalies are made on); trailing rows or frames that do not fill a cell are dropped."""
    n, h, w = logmel.shape
    h, w = h // factor, w // factor
    cut = logmel[:, : h * factor, : w * factor].astype(np.float32)
    return cut.reshape(n, h, factor, w, factor).mean(axis=(2, 4))


def cell_sd_per_clip(grid: np.ndarray, machine_ids: np.ndarray) -> np.ndarray:
    """Each clip's within-ID cell SD: the RMS over cells of its ID's clips' deviation from the
    ID's mean clip (one number per ID, repeated per clip); 1 where an ID has one clip."""
    out = np.ones(len(grid), dtype=np.float32)
    for mid in np.unique(machine_ids):
        pick = machine_ids == mid
        if pick.sum() > 1:
            dev = grid[pick] - grid[pick].mean(axis=0, keepdims=True)
            out[pick] = max(float(np.sqrt(np.mean(dev**2))), 1e-3)
    return out


def auc(normal: np.ndarray, anomalous: np.ndarray) -> float:
    """Area under the ROC curve: the chance that an anomalous clip scores above a normal one
    (ties count half); NaN without both kinds of clip."""
    if len(normal) == 0 or len(anomalous) == 0:
        return float("nan")
    diff = np.asarray(anomalous, dtype=float)[:, None] - np.asarray(normal, dtype=float)[None, :]
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def pauc(normal: np.ndarray, anomalous: np.ndarray, max_fpr: float = 0.1) -> float:
    """DCASE's pAUC: the ROC area up to ``max_fpr``, McClish-standardized (0.5 for chance,
    1 for a perfect ranking), as ``sklearn.metrics.roc_auc_score(max_fpr=0.1)`` gives it."""
    if len(normal) == 0 or len(anomalous) == 0:
        return float("nan")
    scores = np.concatenate([normal, anomalous]).astype(float)
    labels = np.concatenate([np.zeros(len(normal)), np.ones(len(anomalous))])
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    distinct = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # last of each tie
    tps = np.cumsum(labels)[distinct]
    fps = np.cumsum(1 - labels)[distinct]
    tpr = np.r_[0.0, tps / len(anomalous)]
    fpr = np.r_[0.0, fps / len(normal)]
    stop = np.searchsorted(fpr, max_fpr, side="right")
    x = np.r_[fpr[:stop], max_fpr]
    y = np.r_[tpr[:stop], np.interp(max_fpr, fpr, tpr)]
    area = float(np.trapezoid(y, x))
    min_area = 0.5 * max_fpr**2
    return 0.5 * (1 + (area - min_area) / (max_fpr - min_area))


def spearman(a, b) -> float:
    """Rank correlation of two equally long sequences (``scipy.stats.spearmanr``; average
    ranks for ties); NaN when either is constant or shorter than 3."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    from scipy.stats import spearmanr  # here: the stage run with downstream off never needs it

    return float(spearmanr(a, b).statistic)


@dataclass(frozen=True)
class ClipLabels:
    """One machine type's test clips as the metrics see them: label and machine ID."""

    label: np.ndarray  # 0 normal, 1 anomalous
    machine_id: np.ndarray


def type_metrics(scores: np.ndarray, test: ClipLabels) -> tuple[float, float]:
    """Mean over the type's IDs of AUC and of pAUC for one detector's clip scores."""
    aucs, paucs = [], []
    for mid in np.unique(test.machine_id):
        pick = test.machine_id == mid
        normal = scores[pick & (test.label == 0)]
        anomalous = scores[pick & (test.label == 1)]
        aucs.append(auc(normal, anomalous))
        paucs.append(pauc(normal, anomalous))
    return float(np.nanmean(aucs)), float(np.nanmean(paucs))


def bootstrap_metrics(
    scores: dict[str, np.ndarray],
    test: ClipLabels,
    n_bootstrap: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Per setting, ``n_bootstrap`` resampled (AUC, pAUC) type means, shape (n_bootstrap, 2).

    ``scores[setting]`` is (n_seeds, n_clips). Every resample draws the test clips again
    within each ID and label, the same clips for every setting (so differences are paired),
    and the training seeds again, independently per setting (so seed-to-seed variation
    widens the intervals); the metric is the mean over the drawn seeds.
    """
    rng = np.random.default_rng(seed)
    groups = [
        np.flatnonzero((test.machine_id == mid) & (test.label == lab))
        for mid in np.unique(test.machine_id)
        for lab in (0, 1)
    ]
    out = {name: np.empty((n_bootstrap, 2)) for name in scores}
    for b in range(n_bootstrap):
        idx = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups if len(g)])
        resampled = ClipLabels(test.label[idx], test.machine_id[idx])
        for name, per_seed in scores.items():
            seeds = rng.integers(0, per_seed.shape[0], size=per_seed.shape[0])
            values = [type_metrics(per_seed[s, idx], resampled) for s in seeds]
            out[name][b] = np.mean(values, axis=0)
    return out


def interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap values."""
    tail = 100 * (1 - level) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def difference_verdict(low: float, high: float) -> str:
    """ "higher" / "lower" where the paired interval excludes 0, else "not distinguishable"."""
    if low > 0:
        return "higher"
    if high < 0:
        return "lower"
    return "not distinguishable"


def closeness_sentence(low: float, high: float, n_settings: int, n_clips: int) -> str:
    """What the rank correlation of closeness (minus the mask score) and AUC supports."""
    if n_settings < 3 or not np.isfinite(low) or not np.isfinite(high):
        return f"not distinguishable: {n_settings} settings are too few to rank"
    if low > 0:
        return "closer masks trained better detectors here"
    if high < 0:
        return "closer masks did not train better detectors here (they trained worse)"
    return f"not distinguishable with {n_clips} test clips"


def curve_answer(type_record: dict | None) -> str | None:
    """What the report may say of a type's dose-response curve (page 1 and the figure):
    None where the check is not valid for the type or named no shape; "closeness not
    ranked: N held-out region(s)" where the settings' mask scores rest on too few held-out
    regions (``ranked`` false); else the named shape."""
    found = (type_record or {}).get("rank_correlation", {})
    if not type_record or not type_record.get("valid") or "shape" not in found:
        return None
    if not found.get("ranked", True):
        n = found["held_out_regions"]
        return f"closeness not ranked: {n} held-out region{'' if n == 1 else 's'}"
    return found["shape"]


def per_id_standardize(
    train: np.ndarray, train_ids: np.ndarray, test: np.ndarray, test_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test clips (N, H, W) standardized per mel row with their own ID's train clips'
    mean and SD over clips and frames; a test clip whose ID has no train clips is left as is.

    Statistics pooled over a type's IDs leave each ID's own spectral offset in the data, often
    larger than a sub-dB anomaly: a detector then learns which ID a clip is, not whether
    something was added (and a score like mean z² can even drop where an anomaly fills a band
    in which its ID lies below the pooled mean). Per ID, the offset is 0 by construction.
    """
    train_out = np.array(train, dtype=np.float32, copy=True)
    test_out = np.array(test, dtype=np.float32, copy=True)
    for mid in np.unique(train_ids):
        own = train[train_ids == mid]
        mean = own.mean(axis=(0, 2), keepdims=True)[0]
        sd = np.maximum(own.std(axis=(0, 2), keepdims=True)[0], 1e-3)
        train_out[train_ids == mid] = (own - mean) / sd
        pick = test_ids == mid
        test_out[pick] = (test[pick] - mean) / sd
    return train_out, test_out


def zscore_scores(
    train: np.ndarray,
    train_ids: np.ndarray,
    test: np.ndarray,
    test_ids: np.ndarray,
    n_frames: np.ndarray,
) -> np.ndarray:
    """The maskless reference: each test clip's mean over its real frames and bins of the
    squared per-bin z-score against its own ID's train clips (per-bin mean and SD over clips
    and frames); ``train``/``test`` are (N, n_bins, T). NaN for an ID without train clips."""
    out = np.full(len(test), np.nan)
    for mid in np.unique(test_ids):
        own = train[train_ids == mid]
        if not len(own):
            continue
        mean = own.mean(axis=(0, 2))[:, None]
        sd = np.maximum(own.std(axis=(0, 2)), 1e-3)[:, None]
        for k in np.flatnonzero(test_ids == mid):
            cols = max(1, int(n_frames[k]))
            out[k] = float(np.mean(((test[k][:, :cols] - mean) / sd) ** 2))
    return out


REFERENCE_LABELS = {  # the reference detectors, as the report and figures name them
    "baseline_ae": "DCASE 2020 baseline autoencoder",
    "zscore": "maskless per-ID z-score",
}
FAR_AUC_MARGIN = 0.15  # "far better": a reference's AUC above every proxy's by at least this


def validity(settings: dict[str, dict], references: dict[str, dict]) -> tuple[bool, str]:
    """Whether a type's proxy check can rank its settings, and why not.

    Not valid where every setting's AUC interval lies wholly below 0.5 (the detectors rank
    anomalous clips as more normal than normal ones), or where a reference detector does far
    better than every proxy: its AUC interval's lower end above every proxy's upper end and
    its AUC at least ``FAR_AUC_MARGIN`` above the best proxy's (the proxy then misses what
    the data show, and its ranking says more about the proxy than about the masks).
    """
    if settings and all(s["auc_ci"][1] < 0.5 for s in settings.values()):
        return False, "every setting's AUC interval lies below 0.5 (below chance)"
    best = max((s["auc"] for s in settings.values()), default=float("nan"))
    top = max((s["auc_ci"][1] for s in settings.values()), default=float("nan"))
    for name, ref in references.items():
        if ref["auc_ci"][0] > top and ref["auc"] >= best + FAR_AUC_MARGIN:
            return False, (
                f"the {REFERENCE_LABELS.get(name, name)} does far better than every proxy "
                f"(AUC {ref['auc']:.2f} vs at best {best:.2f})"
            )
    return True, ""


@dataclass(frozen=True)
class TrainingResult:
    """What the downstream check found for one type: the proxy AUC of the setting page 1
    recommends minus that of the user's setting, its paired interval, and the validity rule."""

    auc_difference: float
    ci: tuple[float, float]
    valid: bool = True
    invalid_reason: str = ""
    compared: str = ""  # "fitted − current": which settings the difference is between


def combined_verdict(
    closeness: str, training: TrainingResult | None, how_to_run: str
) -> tuple[str, str]:
    """Page 1's verdict from closeness ("switch" / "keep" / "not enough evidence") and the
    training result, with the sentence that shows both: "switch" only where training agrees
    (its interval above 0), "closeness and training disagree" where training points the
    other way (its interval excludes 0 on the wrong side); without a valid training result the
    verdict rests on closeness alone and the sentence says how to run the check."""
    if training is None:
        return closeness, f"rests on closeness alone (training check not run: {how_to_run})"
    if not training.valid:
        reason = training.invalid_reason
        return closeness, f"closeness alone: check not valid ({reason})"
    low, high = training.ci
    what = f"training, {training.compared}" if training.compared else "training"
    words = f"{what}: proxy AUC {training.auc_difference:+.3f} [{low:+.3f}, {high:+.3f}]"
    found = difference_verdict(low, high)
    if closeness == "switch":
        if found == "higher":
            return "switch", f"closeness and training agree ({words})"
        if found == "lower":
            return "closeness and training disagree", words
        return "not enough evidence", f"training not distinguishable ({words})"
    if closeness == "keep" and found == "higher":
        return "closeness and training disagree", words
    return closeness, words


def training_result(
    type_record: dict[str, Any] | None, candidate: str = "fitted"
) -> TrainingResult | None:
    """Page 1's training input for one type from its ``downstream.json`` entry: the
    ``candidate`` setting's AUC minus the user's setting's (None where the check did not run
    or did not train both settings)."""
    found = (type_record or {}).get("minus_user_setting", {}).get(candidate)
    if not found:
        return None
    user = type_record.get("user_setting")
    return TrainingResult(
        found["auc_difference"],
        tuple(found["ci"]),
        type_record["valid"],
        type_record["invalid_reason"],
        f"{candidate} − {user}" if user else "",
    )
