"""An absolute yardstick: can a classifier tell a setting's masks from the anomaly regions?

A classifier two-sample test: a logistic regression on the score's coordinates and their
squares and products (scikit-learn; it sees differences in position and in spread) is told to
separate masks from real regions (coordinates of :func:`analysis.scoring.score_points`),
with as many masks as regions (drawn at random), and is judged out of fold
(``N_FOLDS``-fold stratified cross-validation). Its held-out AUC is 0.5 where the masks cannot
be told from the regions and 1 where they always can; the interval resamples the out-of-fold
predictions (regions and masks, each class apart).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from analysis.scoring import Masks, interval, mask_coordinates, score_points

N_FOLDS = 5
MIN_REGIONS = 5  # fewer regions than this: no yardstick
CLASSIFIER = "logistic regression on the score's coordinates, their squares and products"


def _classifier():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures

    return make_pipeline(PolynomialFeatures(2), LogisticRegression(C=1.0, max_iter=2000))


def rank_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUC as the Mann-Whitney statistic: the chance that a mask scores above a region (ties
    count half)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def out_of_fold_scores(points: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """Each point's predicted probability of being a mask, from a classifier that did not see it."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    n_folds = min(N_FOLDS, int(np.bincount(labels).min()))
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return cross_val_predict(_classifier(), points, labels, cv=folds, method="predict_proba")[:, 1]


def two_sample_auc(
    masks: Masks,
    real: dict[str, np.ndarray],
    n_mels: int,
    T: int,
    settings: dict[str, Any],
    seed: int,
) -> dict[str, Any] | None:
    """Held-out AUC of telling ``masks`` from ``real`` regions, with its bootstrap interval
    (``auc``, ``ci_low``, ``ci_high``, ``n_regions``); None with fewer than ``MIN_REGIONS``."""
    y = score_points(real, n_mels, T)
    if y.shape[0] < MIN_REGIONS:
        return None
    rng = np.random.default_rng(seed)
    x_all = mask_coordinates(masks, n_mels, T)
    x = x_all[rng.choice(x_all.shape[0], size=y.shape[0], replace=x_all.shape[0] < y.shape[0])]
    points = np.concatenate([x, y])
    labels = np.concatenate([np.ones(len(x), dtype=int), np.zeros(len(y), dtype=int)])
    scores = out_of_fold_scores(points, labels, seed)
    auc = rank_auc(labels, scores)
    is_mask, is_real = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    boots = np.empty(settings["n_bootstrap"])
    for b in range(boots.size):
        idx = np.concatenate([rng.choice(is_mask, is_mask.size), rng.choice(is_real, is_real.size)])
        boots[b] = rank_auc(labels[idx], scores[idx])
    low, high = interval(boots, settings["ci_level"])
    return {"auc": auc, "ci_low": low, "ci_high": high, "n_regions": int(y.shape[0])}


def yardsticks(
    candidates: dict[str, Masks],
    held_out: dict[str, np.ndarray],
    n_mels: int,
    T: int,
    settings: dict[str, Any],
    seed: int,
) -> dict[str, dict[str, Any] | None]:
    """:func:`two_sample_auc` of every candidate against the held-out regions."""
    return {
        name: two_sample_auc(feats, held_out, n_mels, T, settings, seed)
        for name, feats in candidates.items()
    }
