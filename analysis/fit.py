"""The fit: search the band-times-segments family for the setting closest to real regions.

The search space is :data:`FIT_KEYS` of :class:`~analysis.strategies.band.AudioSpecificStrategy`
(several bands at once, a share of full-clip masks). It starts from ranges read off the
real features (:func:`initial_guess`), then random search and local refinement on the
schedule of :class:`SearchSchedule`, every candidate drawn with the same seed (common
random numbers). :func:`fitted_draw` is the one place the fitted setting's masks are drawn
for scoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.mel import MelGeometry
from analysis.regions import profile_features, score_transform
from analysis.scoring import score
from analysis.strategies.band import AudioSpecificStrategy
from analysis.strategies.options import SEED_DEFAULTS

# The space the fit searches: the band-times-segments family of analysis.strategies with
# several bands at once and a share of full-clip masks (coverage 85-100 %, the family default).
FIT_KEYS = (
    "min_band_fraction",
    "max_band_fraction",
    "min_bands",
    "max_bands",
    "full_time_prob",
    "min_segments",
    "max_segments",
    "min_seg_len",
    "max_seg_len",
    "min_band_position",
    "max_band_position",
)
# Many short segments that merge into one clip-long segment score like a single long segment;
# as advice the single segment is the right answer. The search therefore minimizes
# score + PARSIMONY * (log(1 + max_segments) / log(1 + T/2)); reported scores stay pure.
PARSIMONY = 0.01


def strategy_features(
    settings: dict[str, Any], geometry: MelGeometry, n_masks: int, seed: int
) -> dict[str, np.ndarray]:
    """Region features of ``n_masks`` masks of an AudioSpecificStrategy setting (drawn as factors)."""
    strategy = AudioSpecificStrategy(geometry.spectrogram_shape, seed=seed, **settings)
    rows, frames = strategy.draw_factors(n_masks)
    return profile_features(rows, frames)


def _clean(candidate: dict[str, float], n_mels: int, T: int) -> dict[str, Any]:
    """Round and order a raw candidate into a valid AudioSpecificStrategy setting."""
    bf = sorted(
        float(np.clip(candidate[k], 1.0 / n_mels, 1.0))
        for k in ("min_band_fraction", "max_band_fraction")
    )
    bands = sorted(int(np.clip(round(candidate[k]), 1, 8)) for k in ("min_bands", "max_bands"))
    seg = sorted(
        int(np.clip(round(candidate[k]), 1, T // 2)) for k in ("min_segments", "max_segments")
    )
    ln = sorted(int(np.clip(round(candidate[k]), 1, T)) for k in ("min_seg_len", "max_seg_len"))
    pos = sorted(
        float(np.clip(candidate[k], 0.0, 1.0)) for k in ("min_band_position", "max_band_position")
    )
    if pos[1] - pos[0] < bf[0]:  # the band must fit in its position range
        centre = 0.5 * (pos[0] + pos[1])
        pos = [max(0.0, centre - bf[0] / 2), min(1.0, centre + bf[0] / 2)]
        if pos[1] - pos[0] < bf[0]:
            pos = [0.0, bf[0]] if pos[0] == 0.0 else [1.0 - bf[0], 1.0]
    return {
        "min_band_fraction": round(bf[0], 4),
        "max_band_fraction": round(bf[1], 4),
        "min_bands": bands[0],
        "max_bands": bands[1],
        "full_time_prob": round(float(np.clip(candidate["full_time_prob"], 0.0, 1.0)), 3),
        "min_segments": seg[0],
        "max_segments": seg[1],
        "min_seg_len": ln[0],
        "max_seg_len": ln[1],
        "min_band_position": round(pos[0], 4),
        "max_band_position": round(pos[1], 4),
    }


# A region covering this much of the clip counts as "full clip": the family's full-clip mode
# draws coverage from min_full_coverage (this) to max_full_coverage.
FULL_CLIP_COVERAGE: float = SEED_DEFAULTS["min_full_coverage"]


@dataclass(frozen=True)
class SearchSchedule:
    """How :func:`fit_preset` searches (the counts come from the ``recommend`` params).

    Random search: every ``random_every``-th candidate is a broad random draw, the others
    perturb the best so far by ``search_spread``. Refinement: ``n_refine_rounds`` rounds of
    ``max(min_refine_steps, n_search // refine_steps_divisor)`` perturbations, the spread
    starting at ``refine_spread`` and shrinking by ``refine_decay`` each round. Positions
    and the full-clip share move additively by ``additive_step`` times the spread.
    """

    random_every: int = 4
    search_spread: float = 0.6
    refine_spread: float = 0.3
    refine_decay: float = 0.6
    min_refine_steps: int = 8
    refine_steps_divisor: int = 8
    additive_step: float = 0.15


SCHEDULE = SearchSchedule()


def initial_guess(real: dict[str, np.ndarray], n_mels: int, T: int) -> dict[str, Any]:
    """Ranges read off the real features' 10th and 90th percentiles.

    The share of regions covering at least ``FULL_CLIP_COVERAGE`` of the clip
    starts ``full_time_prob``; the segment ranges come from the other regions.
    """

    def q(values, p):
        values = values[np.isfinite(values)]
        return float(np.percentile(values, p)) if values.size else 1.0

    full = real["time_coverage"] >= FULL_CLIP_COVERAGE
    part = ~full if (~full).any() else np.ones_like(full)
    low_edge = real["band_centre_fraction"] - real["band_fraction"] / 2
    high_edge = real["band_centre_fraction"] + real["band_fraction"] / 2
    per_band = real["band_fraction"] / np.maximum(real["n_bands"], 1)
    return _clean(
        {
            "min_band_fraction": q(per_band, 10),
            "max_band_fraction": q(per_band, 90),
            "min_bands": q(real["n_bands"], 10),
            "max_bands": q(real["n_bands"], 90),
            "full_time_prob": float(np.mean(full)),
            "min_segments": q(real["n_segments"][part], 10),
            "max_segments": q(real["n_segments"][part], 90),
            "min_seg_len": q(real["mean_seg_len_frames"][part], 10),
            "max_seg_len": q(real["max_seg_len_frames"][part], 90),
            "min_band_position": q(low_edge, 5),
            "max_band_position": q(high_edge, 95),
        },
        n_mels,
        T,
    )


def _perturb(
    base: dict[str, Any], rng: np.random.Generator, spread: float, n_mels: int, T: int
) -> dict[str, Any]:
    """A random neighbour: each range end moved by a log-normal factor (positions and the
    full-clip share additively)."""
    out = {}
    for key, value in base.items():
        if "position" in key or key == "full_time_prob":
            out[key] = value + rng.normal(0, SCHEDULE.additive_step * spread)
        else:
            out[key] = max(value, 1e-3) * float(np.exp(rng.normal(0, spread)))
    return _clean(out, n_mels, T)


def _random_candidate(rng: np.random.Generator, n_mels: int, T: int) -> dict[str, Any]:
    """A broad draw over the whole space, so the search is not stuck near the initial guess."""
    lo_len = float(np.exp(rng.uniform(0, np.log(T))))
    lo_seg = float(np.exp(rng.uniform(0, np.log(T // 4))))
    lo_bf = float(np.exp(rng.uniform(np.log(1 / n_mels), np.log(0.5))))
    lo_bands = float(rng.integers(1, 4))
    return _clean(
        {
            "min_band_fraction": lo_bf,
            "max_band_fraction": lo_bf * np.exp(rng.uniform(0, 1.5)),
            "min_bands": lo_bands,
            "max_bands": lo_bands + rng.integers(0, 3),
            "full_time_prob": float(rng.choice([0.0, rng.uniform(0, 1), 1.0])),
            "min_segments": lo_seg,
            "max_segments": lo_seg * np.exp(rng.uniform(0, 2)),
            "min_seg_len": lo_len,
            "max_seg_len": lo_len * np.exp(rng.uniform(0, 2)),
            "min_band_position": rng.uniform(0, 0.5),
            "max_band_position": rng.uniform(0.5, 1),
        },
        n_mels,
        T,
    )


def fit_preset(
    real: dict[str, np.ndarray], geometry: MelGeometry, settings: dict[str, Any], seed: int
) -> tuple[dict[str, Any], float]:
    """Search AudioSpecificStrategy settings whose masks are closest to ``real`` regions.

    Every candidate is drawn with the same seed (common random numbers), so
    differences in score come from the settings, not from sampling noise. The
    search adds ``PARSIMONY`` times the normalized ``max_segments`` so that of
    two settings that score alike the one with fewer segments wins.

    Parameters
    ----------
    real
        Region features (``FEATURE_COLUMNS`` arrays) of the fit half.
    settings
        ``recommend`` params: ``n_masks_per_candidate``, ``n_search_candidates``, ``n_refine_rounds``.

    Returns
    -------
    best, best_score
        The fitted setting (keys ``FIT_KEYS``) and its score on ``real``.
    """
    n_mels, T = geometry.spectrogram_shape
    rng = np.random.default_rng(seed)
    n_masks = settings["n_masks_per_candidate"]
    cache: dict[tuple, float] = {}

    def evaluate(candidate: dict[str, Any]) -> float:
        """Score plus a small parsimony term, so near-ties go to the simpler setting."""
        key = tuple(candidate[k] for k in FIT_KEYS)
        if key not in cache:
            fit = score(strategy_features(candidate, geometry, n_masks, seed), real, n_mels, T)
            simplicity = score_transform(
                "n_segments", candidate["max_segments"], n_mels, T
            ) + score_transform("n_bands", candidate["max_bands"], n_mels, T)
            cache[key] = fit + PARSIMONY * float(simplicity)
        return cache[key]

    best = initial_guess(real, n_mels, T)
    best_score = evaluate(best)
    n_search, plan = settings["n_search_candidates"], SCHEDULE
    for i in range(n_search):
        candidate = (
            _random_candidate(rng, n_mels, T)
            if i % plan.random_every == plan.random_every - 1
            else _perturb(best, rng, plan.search_spread, n_mels, T)
        )
        value = evaluate(candidate)
        if value < best_score:
            best, best_score = candidate, value
    spread = plan.refine_spread
    for _ in range(settings["n_refine_rounds"]):
        for _ in range(max(plan.min_refine_steps, n_search // plan.refine_steps_divisor)):
            candidate = _perturb(best, rng, spread, n_mels, T)
            value = evaluate(candidate)
            if value < best_score:
                best, best_score = candidate, value
        spread *= plan.refine_decay
    return best, score(strategy_features(best, geometry, n_masks, seed), real, n_mels, T)


def fitted_draw(
    fitted: dict[str, Any], geometry: MelGeometry, settings: dict[str, Any], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The masks that stand for a fitted setting in every held-out score, as factors.

    ``4 * n_masks_per_candidate`` masks (more than a search candidate gets: these
    are the reported ones) drawn with ``seed``. Returns (rows, frames) bool arrays
    (B, n_mels) and (B, T); each mask is their outer product.
    """
    strategy = AudioSpecificStrategy(geometry.spectrogram_shape, seed=seed, **fitted)
    return strategy.draw_factors(4 * settings["n_masks_per_candidate"])
