"""The fit: search the band-times-segments family for the setting closest to real regions.

The search space is :data:`FIT_KEYS` of :class:`~analysis.strategies.band.AudioSpecificStrategy`
(several bands at once, a share of full-clip masks). It starts from ranges read off the
real features (:func:`initial_guess`), then random search and local refinement on the
schedule of :class:`SearchSchedule`, every candidate drawn with the same seed (common
random numbers). :func:`fitted_draw` is the one place the fitted setting's masks are drawn
for scoring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.mel import MelGeometry
from analysis.regions import profile_features, run_counts, score_transform
from analysis.scoring import score
from analysis.strategies.band import AudioSpecificStrategy
from analysis.strategies.options import SEED_DEFAULTS

# The space the fit searches: the band-times-segments family of analysis.strategies with
# several bands at once and a share of full-clip masks whose coverage range is fitted too.
FIT_KEYS = (
    "min_band_fraction",
    "max_band_fraction",
    "min_bands",
    "max_bands",
    "full_time_prob",
    "min_full_coverage",
    "max_full_coverage",
    "min_segments",
    "max_segments",
    "min_seg_len",
    "max_seg_len",
    "min_band_position",
    "max_band_position",
)
# The fit's objective (fit_objective): the score plus SIMPLICITY_WEIGHT times the simplicity
# terms, so that of two settings that score alike the simpler wins. Many short segments that
# merge into one clip-long segment score like a single long segment, and several bands in a row
# like one wide band; as advice the single segment and the single band are the right answers.
# Each term is a setting's parameter mapped to [0, 1] as the score maps the feature it bounds
# (regions.score_transform): (parameter, feature). Reported scores stay pure.
SIMPLICITY_WEIGHT = 0.01
SIMPLICITY_TERMS: tuple[tuple[str, str], ...] = (
    ("max_segments", "n_segments"),
    ("max_bands", "n_bands"),
)
# A canonical setting replaces the searched one when it scores within this of it on the fit half.
CANONICAL_TOLERANCE = 0.01
# A type's mixture of its IDs' settings is recommended over the single fitted setting only where
# its fit-half score is lower by more than this.
MIXTURE_MARGIN = 0.01


def simplicity(candidate: dict[str, Any], n_mels: int, T: int) -> float:
    """The sum of a setting's ``SIMPLICITY_TERMS``, each in [0, 1]."""
    return float(
        sum(
            score_transform(feature, candidate[key], n_mels, T) for key, feature in SIMPLICITY_TERMS
        )
    )


def fit_objective(fit_score: float, candidate: dict[str, Any], n_mels: int, T: int) -> float:
    """What the search minimizes: ``fit_score`` (the candidate's score on the fit half) plus
    ``SIMPLICITY_WEIGHT`` times its :func:`simplicity`."""
    return fit_score + SIMPLICITY_WEIGHT * simplicity(candidate, n_mels, T)


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
    cover = sorted(
        float(np.clip(candidate[k], FULL_CLIP_COVERAGE, 1.0))
        for k in ("min_full_coverage", "max_full_coverage")
    )
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
        "min_full_coverage": round(cover[0], 3),
        "max_full_coverage": round(cover[1], 3),
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
            "min_full_coverage": q(real["time_coverage"][full], 10) if full.any() else 0.0,
            "max_full_coverage": q(real["time_coverage"][full], 90) if full.any() else 1.0,
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
    base: dict[str, Any],
    rng: np.random.Generator,
    spread: float,
    n_mels: int,
    T: int,
    cover_rng: np.random.Generator,
) -> dict[str, Any]:
    """A random neighbour: each range end moved by a log-normal factor (positions and the
    full-clip share additively)."""
    out = {}
    for key, value in base.items():
        # The full-clip coverage moves by a stream of its own (see fit_preset).
        draw = cover_rng if "coverage" in key else rng
        if "position" in key or "coverage" in key or key == "full_time_prob":
            out[key] = value + draw.normal(0, SCHEDULE.additive_step * spread)
        else:
            out[key] = max(value, 1e-3) * float(np.exp(draw.normal(0, spread)))
    return _clean(out, n_mels, T)


def _random_candidate(
    rng: np.random.Generator, n_mels: int, T: int, cover_rng: np.random.Generator
) -> dict[str, Any]:
    """A broad draw over the whole space, so the search is not stuck near the initial guess."""
    lo_len = float(np.exp(rng.uniform(0, np.log(T))))
    lo_seg = float(np.exp(rng.uniform(0, np.log(T // 4))))
    lo_bf = float(np.exp(rng.uniform(np.log(1 / n_mels), np.log(0.5))))
    lo_bands = float(rng.integers(1, 4))
    lo_cover = cover_rng.uniform(FULL_CLIP_COVERAGE, 1.0)
    return _clean(
        {
            "min_band_fraction": lo_bf,
            "max_band_fraction": lo_bf * np.exp(rng.uniform(0, 1.5)),
            "min_bands": lo_bands,
            "max_bands": lo_bands + rng.integers(0, 3),
            "full_time_prob": float(rng.choice([0.0, rng.uniform(0, 1), 1.0])),
            "min_full_coverage": lo_cover,
            "max_full_coverage": cover_rng.uniform(lo_cover, 1.0),
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
    search minimizes :func:`fit_objective` (the score plus a small simplicity term), so that
    of two settings that score alike the one with fewer segments and bands wins.

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
    n_masks = settings["n_masks_per_candidate"]
    cache: dict[tuple, float] = {}

    def evaluate(candidate: dict[str, Any]) -> float:
        """:func:`fit_objective` of a candidate (cached: the search revisits settings)."""
        key = tuple(candidate[k] for k in FIT_KEYS)
        if key not in cache:
            fit = score(strategy_features(candidate, geometry, n_masks, seed), real, n_mels, T)
            cache[key] = fit_objective(fit, candidate, n_mels, T)
        return cache[key]

    best = search(initial_guess(real, n_mels, T), evaluate, settings, seed, n_mels, T)
    best_fit = score(strategy_features(best, geometry, n_masks, seed), real, n_mels, T)
    plain = canonical_setting(best, geometry, 4 * n_masks, seed)
    plain_fit = score(strategy_features(plain, geometry, n_masks, seed), real, n_mels, T)
    if plain_fit <= best_fit + CANONICAL_TOLERANCE:  # as close: the setting that says it plainly
        return plain, plain_fit
    return best, best_fit


def search(
    start: dict[str, Any],
    evaluate: Callable[[dict[str, Any]], float],
    settings: dict[str, Any],
    seed: int,
    n_mels: int,
    T: int,
) -> dict[str, Any]:
    """Random search then local refinement from ``start`` on the schedule of ``SCHEDULE``;
    the candidate with the lowest ``evaluate`` wins."""
    rng = np.random.default_rng(seed)
    # The full-clip coverage range draws from a stream of its own, so the other parameters
    # search along the same path whatever it does (it matters only where full_time_prob > 0).
    cover_rng = np.random.default_rng([seed, 1])
    best, best_score = start, evaluate(start)
    n_search, plan = settings["n_search_candidates"], SCHEDULE
    for i in range(n_search):
        candidate = (
            _random_candidate(rng, n_mels, T, cover_rng)
            if i % plan.random_every == plan.random_every - 1
            else _perturb(best, rng, plan.search_spread, n_mels, T, cover_rng)
        )
        value = evaluate(candidate)
        if value < best_score:
            best, best_score = candidate, value
    spread = plan.refine_spread
    for _ in range(settings["n_refine_rounds"]):
        for _ in range(max(plan.min_refine_steps, n_search // plan.refine_steps_divisor)):
            candidate = _perturb(best, rng, spread, n_mels, T, cover_rng)
            value = evaluate(candidate)
            if value < best_score:
                best, best_score = candidate, value
        spread *= plan.refine_decay
    return best


def canonical_setting(
    setting: dict[str, Any], geometry: MelGeometry, n_masks: int, seed: int
) -> dict[str, Any]:
    """The same masks, said plainly: the parameters made to mean what the masks show.

    Drawn masks decide: where no mask holds two bands, one band; where (nearly) every mask is
    one run over the full-clip coverage (many overlapping segments tiling the clip), the
    full-clip mode with the coverage range the masks show; where the full-clip mode is always
    or never drawn, the parameters it makes irrelevant set to their plain values.
    """
    n_mels, T = geometry.spectrogram_shape
    strategy = AudioSpecificStrategy(geometry.spectrogram_shape, seed=seed, **setting)
    rows, frames = strategy.draw_factors(n_masks)
    out = dict(setting)
    if run_counts(rows).max() <= 1:
        out["min_bands"] = out["max_bands"] = 1
    coverage = frames.mean(axis=1)
    full = (run_counts(frames) == 1) & (coverage >= FULL_CLIP_COVERAGE)
    if full.mean() >= 0.99 and setting["full_time_prob"] < 1.0:
        out["full_time_prob"] = 1.0
        lo, hi = np.quantile(coverage[full], [0.01, 0.99])
        out["min_full_coverage"], out["max_full_coverage"] = float(lo), float(hi)
    if out["full_time_prob"] >= 1.0:
        out.update(min_segments=1, max_segments=1, min_seg_len=T, max_seg_len=T)
    if out["full_time_prob"] <= 0.0:
        out.update(min_full_coverage=FULL_CLIP_COVERAGE, max_full_coverage=1.0)
    return _clean(out, n_mels, T)


def fitted_draw(
    fitted: dict[str, Any],
    geometry: MelGeometry,
    settings: dict[str, Any],
    seed: int,
    components: list[dict[str, Any]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The masks that stand for a fitted setting (or, with ``components``, a mixture) in every
    held-out score, as factors.

    ``4 * n_masks_per_candidate`` masks (more than a search candidate gets: these
    are the reported ones) drawn with ``seed``. Returns (rows, frames) bool arrays
    (B, n_mels) and (B, T); each mask is their outer product.
    """
    n = 4 * settings["n_masks_per_candidate"]
    if components:
        return mixture_draw(components, geometry, n, seed)
    strategy = AudioSpecificStrategy(geometry.spectrogram_shape, seed=seed, **fitted)
    return strategy.draw_factors(n)


def _runs(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every run of True in (B, L) vectors: (mask index, start, end exclusive)."""
    padded = np.pad(vectors.astype(np.int8), ((0, 0), (1, 1)))
    edges = np.diff(padded, axis=1)
    mask_up, start = np.nonzero(edges == 1)
    _, end = np.nonzero(edges == -1)
    return mask_up, start, end


def drawn_statistics(rows: np.ndarray, frames: np.ndarray, geometry: MelGeometry) -> dict[str, Any]:
    """What a setting's masks are, in the units a researcher thinks in.

    From the masks as factors (``rows`` (B, n_mels), ``frames`` (B, T) bool): the share of
    full-clip masks (one run over at least ``FULL_CLIP_COVERAGE`` of the clip); per band its
    rows, its width in Hz (lower edge of its lowest bin to upper edge of its highest) and its
    centre in Hz; bands per mask; and over the other masks, segments per mask and segment
    lengths in seconds. Ranges are 10th to 90th percentiles (counts: min to max for bands).
    """
    edges = geometry.bin_edges_hz
    _, low, high = _runs(rows)  # high is exclusive
    width_hz = edges[high - 1, 1] - edges[low, 0]
    centre_hz = geometry.bin_to_hz((low + high - 1) / 2)
    n_bands = run_counts(rows)
    coverage = frames.mean(axis=1)
    full = (run_counts(frames) == 1) & (coverage >= FULL_CLIP_COVERAGE)
    segs = run_counts(frames[~full])
    seg_mask, seg_start, seg_end = _runs(frames[~full])

    def span(values, lo=10, hi=90):
        values = np.asarray(values, dtype=float)
        if values.size == 0:
            return None
        return [float(np.percentile(values, lo)), float(np.percentile(values, hi))]

    return {
        "n_masks": int(rows.shape[0]),
        "full_clip_share": float(full.mean()),
        "full_clip_coverage": span(coverage[full]),
        "band_rows": span(high - low),
        "band_width_hz": span(width_hz),
        "band_centre_hz": span(centre_hz),
        "bands_per_mask": [int(n_bands.min()), int(n_bands.max())] if n_bands.size else None,
        "segments_per_mask": span(segs),
        "segment_seconds": span((seg_end - seg_start) * geometry.seconds_per_frame),
    }


MIN_COMPONENT_REGIONS = 2  # an ID needs this many fit-half regions to get a component of its own


def fit_components(
    fit_real: dict[str, np.ndarray],
    fit_groups: list[str],
    geometry: MelGeometry,
    settings: dict[str, Any],
    seed: int,
) -> list[dict[str, Any]]:
    """One fitted component per machine ID of a type, on that ID's part of the type's fit half.

    Weights are the IDs' shares of the fit half's regions (their clip counts: a pooled region
    stands for its half's clips). IDs with fewer than ``MIN_COMPONENT_REGIONS`` regions get
    none. Returns ``[{"machine_id", "weight", "fitted"}]`` (empty with fewer than two IDs: a
    mixture of one is the single fit).
    """
    groups = np.asarray(fit_groups)
    ids = [m for m in sorted(set(fit_groups)) if np.sum(groups == m) >= MIN_COMPONENT_REGIONS]
    if len(ids) < 2:
        return []
    total = sum(int(np.sum(groups == m)) for m in ids)
    out = []
    for k, mid in enumerate(ids):
        pick = groups == mid
        part = {c: v[pick] for c, v in fit_real.items()}
        fitted, _ = fit_preset(part, geometry, settings, seed + 101 * (k + 1))
        out.append(
            {"machine_id": mid, "weight": round(int(pick.sum()) / total, 4), "fitted": fitted}
        )
    return out


def component_counts(weights: list[float], n: int) -> list[int]:
    """``n`` masks split by ``weights`` (largest remainders), in component order."""
    raw = np.asarray(weights, dtype=float) / np.sum(weights) * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - int(counts.sum())]:
        counts[i] += 1
    return counts.tolist()


def mixture_draw(
    components: list[dict[str, Any]], geometry: MelGeometry, n_masks: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n_masks`` masks of a mixture, each component drawing its share (as factors)."""
    rows, frames = [], []
    counts = component_counts([c["weight"] for c in components], n_masks)
    for k, (component, count) in enumerate(zip(components, counts, strict=True)):
        if count:
            strategy = AudioSpecificStrategy(
                geometry.spectrogram_shape, seed=seed + k, **component["fitted"]
            )
            r, f = strategy.draw_factors(count)
            rows.append(r)
            frames.append(f)
    return np.concatenate(rows), np.concatenate(frames)
