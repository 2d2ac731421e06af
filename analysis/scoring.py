"""The score: how close a set of masks is to a set of real anomaly regions, and its intervals.

The score (defined once, in :func:`score`) is the energy distance between the
joint distribution of the masks' features and that of the real regions'
features, each map a point in a weighted feature space (:func:`score_points`)
where frequency position, band width, number of bands and time structure each
weigh once. 0 means the two joint distributions are identical; lower is closer.
Empty masks are points far from every real region, so a preset that draws empty
masks pays for them, and an all-empty preset is worst.

Paired bootstrap intervals (:func:`paired_bootstrap`: the same resampled held-out
regions for every candidate; IDs first, then regions within them, where a row
pools IDs) give intervals of score *differences*; :func:`held_out_comparison`
calls a difference "closer" or "farther" only where its interval excludes 0, "not
distinguishable" where it does not, and "no test" where too few regions allow no interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analysis.artifacts import read_mask_features
from analysis.mel import MelGeometry
from analysis.records import DIFF_PARTS, diff_key, score_key
from analysis.regions import score_transform

# The joint score's coordinates, each scaled to about [0, 1], and their weights: frequency
# position, band width, number of bands and time structure weigh once each (the two time
# coordinates share one weight: coverage and the number of segments together fix the mean
# segment length, which is therefore not a coordinate of its own). The one list of what the
# score compares: the score (score_points) and the figure of its feature distributions use it.
SCORE_COORDINATES: tuple[tuple[str, float], ...] = (
    ("band_centre_fraction", 1.0),
    ("band_width_log", 1.0),
    ("n_bands", 1.0),
    ("time_coverage", float(np.sqrt(0.5))),
    ("n_segments", float(np.sqrt(0.5))),
)
EMPTY_POINT = -1.0  # every coordinate of an empty mask: at least 2 (weighted) from any region
MIN_HOLDOUT_FOR_CI = 5  # fewer held-out regions than this: no interval, and no claim
# The yardstick: the fit half's real regions scored against the held-out half's, as if they were
# masks. As close as real anomalies are to themselves; a preset near it cannot get much closer.
NOISE_LEVEL = "noise_level"
# A machine type's two fitted forms: one setting for all its IDs, and a mixture of its IDs' own.
SINGLE, MIXTURE = "single", "mixture"
NOT_PRESETS = ("recommended", NOISE_LEVEL, SINGLE, MIXTURE)  # candidates that are not presets


SCORE_DEFINITION = (
    "score = energy distance between the joint distribution of the masks' features and that of "
    "the anomaly regions' features (regions found in anomalous test clips): 2 E|X - Y| - E|X - X'| - E|Y - Y'| (Euclidean; the "
    "within-sample means over pairs of different members, so it is unbiased and can fall "
    "slightly below 0 by chance when the two are alike). "
    "Each map is a point with coordinates band centre (fraction of n_mels), band width "
    "(log(1 + rows) / log(1 + n_mels)), number of bands (log(1 + n) / log(1 + n_mels/2)), each "
    "with weight 1, and time coverage and number of segments (log(1 + n) / log(1 + T/2)), each "
    "with weight sqrt(1/2), so frequency position, band width, band count and time structure "
    "weigh once each. An empty mask is the point with every coordinate -1, far from every anomaly "
    "region. 0 means identical joint distributions; lower is closer. The score cannot see where "
    "the bands of a multi-band map sit beyond their cell-weighted centre, nor where in the clip "
    "the segments lie."
)


def score_coordinates(
    features: dict[str, np.ndarray], n_mels: int, T: int
) -> dict[str, np.ndarray]:
    """Every ``SCORE_COORDINATES`` coordinate of maps (region features, ``FEATURE_COLUMNS``
    arrays), unweighted, in [0, 1]; NaN for empty maps."""
    rows = np.asarray(features["band_fraction"], dtype=np.float64) * n_mels
    columns = {
        "band_centre_fraction": np.asarray(features["band_centre_fraction"], dtype=np.float64),
        "band_width_log": np.log1p(rows) / np.log1p(n_mels),
        "n_bands": score_transform("n_bands", features["n_bands"], n_mels, T),
        "time_coverage": np.asarray(features["time_coverage"], dtype=np.float64),
        "n_segments": score_transform("n_segments", features["n_segments"], n_mels, T),
    }
    return {name: columns[name] for name, _ in SCORE_COORDINATES}


def score_points(features: dict[str, np.ndarray], n_mels: int, T: int) -> np.ndarray:
    """(B, d) points of maps in the score's weighted feature space; empty maps at EMPTY_POINT."""
    points = np.stack(list(score_coordinates(features, n_mels, T).values()), axis=1)
    points[~np.all(np.isfinite(points), axis=1)] = EMPTY_POINT
    return points * np.array([w for _, w in SCORE_COORDINATES])


def _within(distances: np.ndarray) -> float:
    """Mean distance between two different members of one sample (0 for a single member).

    The U-statistic: the zero self-distances are left out, so the score of a
    sample against its own distribution is 0 on average at every sample size,
    and differences of scores are unbiased (what the bootstrap intervals need).
    """
    n = distances.shape[0]
    return float(distances.sum() / (n * (n - 1))) if n > 1 else 0.0


def _mean_pair_distance(points: np.ndarray) -> float:
    """``_within(cdist(points, points))`` from the n(n-1)/2 distinct pairs only (half the work)."""
    from scipy.spatial.distance import pdist

    return float(pdist(points).mean()) if points.shape[0] > 1 else 0.0


def _cdist(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of ``x`` and of ``y`` (scipy, imported when used:
    0.3 s that the stages importing this module for its constants do not need)."""
    from scipy.spatial.distance import cdist

    return cdist(x, y)


def _energy(cross: float, self_masks: float, self_real: float) -> float:
    return float(2 * cross - self_masks - self_real)


@dataclass(frozen=True)
class MaskPoints:
    """A set of masks as the score sees them: their points (:func:`score_points`) on one grid
    and their mean distance between two different masks (the mask-mask term of the energy
    distance). Computed once (:func:`mask_points`) for masks that are scored many times
    against different regions (the presets, in every group and split of ``recommend``)."""

    points: np.ndarray  # (B, d)
    within: float
    shape: tuple[int, int]  # (n_mels, T) of the grid the points were made for


def mask_points(features: dict[str, np.ndarray], n_mels: int, T: int) -> MaskPoints:
    """Mask features on an ``n_mels`` x ``T`` grid as :class:`MaskPoints`."""
    x = score_points(features, n_mels, T)
    return MaskPoints(x, _mean_pair_distance(x), (n_mels, T))


Masks = dict[str, np.ndarray] | MaskPoints  # what a score takes for the masks' side


def as_mask_points(masks: Masks, n_mels: int, T: int) -> MaskPoints:
    """``masks`` as :class:`MaskPoints` (made here from features; checked for the grid)."""
    if not isinstance(masks, MaskPoints):
        return mask_points(masks, n_mels, T)
    if masks.shape != (n_mels, T):
        raise ValueError(f"masks prepared for a {masks.shape} grid scored on ({n_mels}, {T})")
    return masks


def mask_coordinates(masks: Masks, n_mels: int, T: int) -> np.ndarray:
    """The (B, d) points of ``masks`` in the score's space (without the mask-mask term)."""
    if isinstance(masks, MaskPoints):
        return as_mask_points(masks, n_mels, T).points
    return score_points(masks, n_mels, T)


def score(mask_features: Masks, real_features: dict[str, np.ndarray], n_mels: int, T: int) -> float:
    """The distance between mask features and real region features (lower is closer).

    See ``SCORE_DEFINITION``. ``mask_features`` may be :class:`MaskPoints` made once. Raises
    ValueError when either side has no maps.
    """
    x, y = as_mask_points(mask_features, n_mels, T), score_points(real_features, n_mels, T)
    if x.points.shape[0] == 0 or y.shape[0] == 0:
        raise ValueError("score needs at least one mask and one real region")
    return _energy(_cdist(x.points, y).mean(), x.within, _mean_pair_distance(y))


def cluster_resamples(groups: list[str], n_boot: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Bootstrap index sets: with several groups (machine IDs), groups are drawn with
    replacement first and clips within each drawn group next; with one group, clips only."""
    groups_arr = np.asarray(groups)
    members = [np.flatnonzero(groups_arr == g) for g in sorted(set(groups))]
    draws = []
    for _ in range(n_boot):
        if len(members) > 1:
            chosen = rng.integers(0, len(members), len(members))
            draws.append(np.concatenate([rng.choice(members[c], members[c].size) for c in chosen]))
        else:
            draws.append(rng.integers(0, len(groups), len(groups)))
    return draws


def paired_bootstrap(
    candidates: dict[str, Masks],
    real: dict[str, np.ndarray],
    groups: list[str],
    n_mels: int,
    T: int,
    n_boot: int,
    seed: int,
) -> tuple[dict[str, float], np.ndarray]:
    """Every candidate's score on ``real`` and on ``n_boot`` paired resamples of it.

    The same resampled clips score every candidate, so differences between
    candidates carry only the resampling noise they share. Returns the point
    scores and a (n_boot, n_candidates) matrix in ``candidates`` order.
    """
    y = score_points(real, n_mels, T)
    d_yy = _cdist(y, y)
    names = list(candidates)
    cross, self_terms = {}, {}
    for name in names:
        x = as_mask_points(candidates[name], n_mels, T)
        cross[name] = _cdist(x.points, y).mean(axis=0)  # each real region's mean distance to them
        self_terms[name] = x.within
    point = {n: _energy(cross[n].mean(), self_terms[n], _within(d_yy)) for n in names}
    draws = cluster_resamples(groups, n_boot, np.random.default_rng(seed))
    boots = np.empty((n_boot, len(names)))
    for b, idx in enumerate(draws):
        yy = within_resampled(d_yy, idx)
        for j, name in enumerate(names):
            boots[b, j] = _energy(cross[name][idx].mean(), self_terms[name], yy)
    return point, boots


def within_resampled(distances: np.ndarray, idx: np.ndarray) -> float:
    """:func:`_within` of a resample ``idx`` of a sample, over pairs of *different* members.

    A resample draws members more than once; a pair of two copies of one member has
    distance 0 and is no pair of two different draws from the distribution. Counted, it
    pulls the within-sample mean down and every resampled score up (5 of 78 point scores
    lay below their own interval). With ``c_k`` copies of member k, the pairs of different
    members weigh ``c_k c_l`` (k != l) out of ``n**2 - sum(c_k**2)``.
    """
    counts = np.bincount(idx, minlength=distances.shape[0]).astype(np.float64)
    pairs = idx.size**2 - float(counts @ counts)
    return float(counts @ distances @ counts / pairs) if pairs > 0 else 0.0


def interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of bootstrap values at ``level``."""
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


# The paired differences a row may report, as the roles compared (diff_key(a, b) names them):
# the fitted setting against the closest preset and against "current", the closest preset
# against "current", the mixture against the single fitted setting.
COMPARISONS: tuple[tuple[str, str], ...] = (
    ("fitted", "best"),
    ("fitted", "current"),
    ("best", "current"),
    ("mixture", "single"),
)


def comparisons(
    best: str, presets: list[str], with_mixture: bool = False
) -> list[tuple[tuple[str, str], str, str]]:
    """The paired differences a row reports: (roles, a, b) is score(a) - score(b), stored
    under ``diff_key(*roles)`` (roles from ``COMPARISONS``)."""
    out = [(("fitted", "best"), "recommended", best)]
    if with_mixture:
        out.append((("mixture", "single"), MIXTURE, SINGLE))
    if "current" in presets:
        out.append((("fitted", "current"), "recommended", "current"))
        if best != "current":
            out.append((("best", "current"), best, "current"))
    return out


def held_out_comparison(
    candidates: dict[str, Masks],
    held_out: dict[str, np.ndarray],
    groups: list[str],
    best: str,
    geometry: MelGeometry,
    settings: dict[str, Any],
    seed: int,
    n_independent: int | None = None,
) -> dict[str, Any]:
    """Held-out scores of every candidate, and paired intervals of score differences.

    With fewer than ``MIN_HOLDOUT_FOR_CI`` independent held-out regions (a
    pooled region counts once, however many clips it stands for) no interval
    is given (``*_ci_*`` None) and no difference can be called distinguishable.
    """
    n_mels, T = geometry.spectrogram_shape
    point, boots = paired_bootstrap(
        candidates, held_out, groups, n_mels, T, settings["n_bootstrap"], seed
    )
    names = list(candidates)
    n_independent = len(groups) if n_independent is None else n_independent
    with_ci = n_independent >= MIN_HOLDOUT_FOR_CI
    out: dict[str, Any] = {"intervals": with_ci, "n_independent_holdout": n_independent}
    for j, name in enumerate(names):
        lo, hi = interval(boots[:, j], settings["ci_level"]) if with_ci else (None, None)
        out[score_key(name)], out[score_key(name, "ci_low")], out[score_key(name, "ci_high")] = (
            point[name],
            lo,
            hi,
        )
    presets = [n for n in names if n not in NOT_PRESETS]
    for roles, a, b in comparisons(best, presets, MIXTURE in names):
        diff = point[a] - point[b]
        if with_ci:
            lo, hi = interval(
                boots[:, names.index(a)] - boots[:, names.index(b)], settings["ci_level"]
            )
            verdict = "closer" if hi < 0 else "farther" if lo > 0 else "not distinguishable"
        else:
            lo, hi, verdict = None, None, "no test"
        for part, value in zip(DIFF_PARTS, (diff, lo, hi, verdict), strict=True):
            out[diff_key(*roles, part)] = value
    return out


def preset_points(
    build_dir: Path, presets: list[str], shape: tuple[int, int], grid: str | None = None
) -> dict[str, MaskPoints]:
    """Every preset's masks (at spectrogram size, or projected onto ``grid`` of ``shape``) as
    the score sees them."""
    features = read_mask_features(build_dir / "masks", presets, grid)
    return {name: mask_points(f, *shape) for name, f in features.items()}
