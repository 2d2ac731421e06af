"""The proxy's own calibration: on a planted copy of a type's normal clips, does a proxy trained
with masks of the planted shape beat one trained with a mismatched mask family?

Each type's normal test clips are scored twice: as they are (label 0) and with an anomaly of a
known shape put in (label 1): :data:`PLANTED_SHAPE` masks (narrow bands, a few segments, drawn
at spectrogram size and projected onto the grid as training projects them, ``any_cell``), the
change inside of the proxy's own kind (:func:`planted_copy`). Two proxies per
training seed train on the type's normal train clips as in the stage: one with the planted
shape's family, one with :data:`MISMATCHED_SHAPE` (wide bands over the whole clip). Where the
matched proxy's AUC is not above the mismatched one's (paired interval), the proxy cannot tell
a mask family that matches the anomalies from one that does not, so its ranking of the real
settings is not evidence about the masks. numpy only (the proxies train in the stage's pool).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from analysis.detection import ClipLabels, bootstrap_metrics, interval, type_metrics
from analysis.strategies.band import AudioSpecificStrategy

PLANTED_SHAPE = {  # the planted anomalies' family: narrow bands, a few short segments
    "kind": "audio_specific",
    "min_band_fraction": 0.05,
    "max_band_fraction": 0.1,
    "min_segments": 2,
    "max_segments": 4,
    "min_seg_len": 16,
    "max_seg_len": 40,
}
MISMATCHED_SHAPE = {  # a family unlike it: wide bands over the whole clip
    "kind": "audio_specific",
    "min_band_fraction": 0.5,
    "max_band_fraction": 0.9,
    "full_time_prob": 1.0,
}
PLANTED_SIZE_SD = 1.5  # the planted change per masked cell, in within-ID cell SD
SETTINGS = {"matched": PLANTED_SHAPE, "mismatched": MISMATCHED_SHAPE}


def planted_grid_masks(
    n: int, spectrogram_shape: tuple[int, int], factor: int, seed: int
) -> np.ndarray:
    """``n`` masks of :data:`PLANTED_SHAPE` at spectrogram size projected onto the grid
    (``factor`` cells per grid cell and axis; a grid cell is masked when any cell under it is),
    (n, n_mels // factor, T // factor) float32 of 0/1."""
    setting = {k: v for k, v in PLANTED_SHAPE.items() if k != "kind"}
    rows, frames = AudioSpecificStrategy(spectrogram_shape, seed=seed, **setting).draw_factors(n)
    h, w = spectrogram_shape[0] // factor, spectrogram_shape[1] // factor
    grid_rows = rows[:, : h * factor].reshape(n, h, factor).any(axis=2)
    grid_cols = frames[:, : w * factor].reshape(n, w, factor).any(axis=2)
    return (grid_rows[:, :, None] & grid_cols[:, None, :]).astype(np.float32)


def planted_copy(
    data: Any,
    spectrogram_shape: tuple[int, int],
    factor: int,
    seed: int,
    perturbation: str = "additive",
    max_shift_bins: int = 4,
) -> Any:
    """A type's :class:`~analysis.downstream.TypeData` whose test clips are its normal test
    clips (label 0) and the same clips with a planted anomaly (label 1), within real frames.
    The anomaly is of the proxy's own kind (``downstream.perturbation``), so that only the
    mask family differs between the two proxies: ``additive`` raises every masked cell by
    :data:`PLANTED_SIZE_SD` of the ID's cell SD; ``shifted_copy`` replaces the masked cells by
    those of a train clip of the same ID shifted 1..``max_shift_bins`` rows along mel (either
    way). The train clips are the type's own; None without normal test clips."""
    normal = np.flatnonzero(data.labels.label == 0)
    if not len(normal):
        return None
    clips = data.test[normal]
    ids = data.labels.machine_id[normal]
    cols = data.real_cols[normal]
    masks = planted_grid_masks(len(normal), spectrogram_shape, factor, seed)
    masks *= (np.arange(clips.shape[2])[None, :] < cols[:, None])[:, None, :]
    if perturbation == "shifted_copy":
        rng = np.random.default_rng(seed)
        donors = np.empty_like(clips)
        for k, mid in enumerate(ids):
            own = np.flatnonzero(data.train_ids == mid)
            donor = data.train[rng.choice(own)] if len(own) else clips[k]
            shift = int(rng.integers(1, max_shift_bins + 1)) * int(rng.choice([-1, 1]))
            donors[k] = np.roll(donor, shift, axis=0)
        anomalous = clips * (1 - masks) + donors * masks
    else:
        sd_of = {m: float(data.cell_sd[data.train_ids == m][0]) for m in np.unique(data.train_ids)}
        size = np.array([sd_of.get(m, 1.0) for m in ids], dtype=np.float32)[:, None, None]
        anomalous = clips + PLANTED_SIZE_SD * size * masks
    return replace(
        data,
        test=np.concatenate([clips, anomalous]),
        real_cols=np.concatenate([cols, cols]),
        labels=ClipLabels(np.repeat([0, 1], len(normal)), np.concatenate([ids, ids])),
        test_files=(),
        zscore=np.zeros(0),
    )


def calibration_result(
    scores: dict[str, np.ndarray], labels: ClipLabels, cfg: dict[str, Any]
) -> dict[str, Any]:
    """Matched vs mismatched on the planted copy (``scores``: (n_seeds, n_clips) each): AUCs,
    the paired difference with its interval, whether the proxy tells them apart, and its
    sentence."""
    boot = bootstrap_metrics(scores, labels, cfg["n_bootstrap"], cfg["seed"])
    auc = {n: float(np.mean([type_metrics(s, labels)[0] for s in v])) for n, v in scores.items()}
    low, high = interval(boot["matched"][:, 0] - boot["mismatched"][:, 0], cfg["ci_level"])
    tells = bool(low > 0)
    diff = auc["matched"] - auc["mismatched"]
    numbers = (
        f"AUC {auc['matched']:.2f} with the planted shape's masks vs {auc['mismatched']:.2f} "
        f"with a mismatched family, difference {diff:+.3f} [{low:+.3f}, {high:+.3f}]"
    )
    return {
        "matched_auc": auc["matched"],
        "mismatched_auc": auc["mismatched"],
        "difference": diff,
        "ci": [low, high],
        "tells": tells,
        "n_clips": int(len(labels.label)),
        "sentence": calibration_sentence(tells, numbers),
    }


def calibration_sentence(tells: bool, numbers: str) -> str:
    """What the calibration says to the reader (``numbers``: the AUCs and the difference)."""
    if tells:
        return f"the proxy tells a matching mask family from a mismatched one ({numbers})"
    return (
        "the proxy cannot tell a matching mask family from a mismatched one on planted data "
        f"({numbers}), so its ranking of the real settings is not evidence"
    )


def fold_into_validity(summary: dict[str, Any], calibration: dict[str, Any] | None) -> None:
    """Record the calibration in a type's summary; where the proxy cannot tell the families
    apart, the type's check is not valid (unless it is already invalid for another reason)."""
    if calibration is None:
        return
    summary["calibration"] = calibration
    if summary["valid"] and not calibration["tells"]:
        summary["valid"] = False
        summary["invalid_reason"] = (
            "calibration failed: masks of the planted shape trained no better proxy than "
            "mismatched ones"
        )
        summary["sentence"] = f"not valid for this type: {summary['invalid_reason']}"
