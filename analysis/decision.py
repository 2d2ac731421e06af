"""The decision per machine type: should the user change the masks they train with?

Per split (:func:`split_test`): the candidates (every preset but the user's own, and the
fitted setting in its recommended form) are ranked on the fit half only; the best is
scored against the user's setting (``recommend.user_setting``) on the held-out half with
the paired bootstrap of :mod:`analysis.scoring`. Across machine types (:func:`holm_levels`):
Holm's step-down over the types whose test ran, one-sided at ``(1 - ci_level) / 2``. Per
type (:func:`decide`): "switch" where the corrected interval of score(candidate) -
score(user's setting) lies below 0 and at least ``STABLE_SHARE`` of the splits say the same;
"keep" where the test ran and that holds for "keep"; else "not enough evidence", with about
how many more anomalous clips would settle it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.artifacts import Verdict, VerdictRecord
from analysis.mel import MelGeometry
from analysis.scoring import MIN_HOLDOUT_FOR_CI, paired_bootstrap

STABLE_SHARE = 0.8  # a verdict must hold in at least this share of the splits
MIN_INDEPENDENT_HOLDOUT = MIN_HOLDOUT_FOR_CI  # independent held-out regions a test needs
# Splits after the first search with this share of the search effort (the fit is the cost).
REPEATED_SEARCH_SHARE = 0.25


@dataclass(frozen=True)
class SplitTest:
    """One split's test of the best candidate (on the fit half) against the user's setting."""

    candidate: str | None  # None where the split has no fit half or no held-out half
    n_independent: int  # independent held-out regions (a pooled region counts once)
    difference: float | None  # score(candidate) - score(user's setting), held-out half
    boots: np.ndarray | None  # paired bootstrap differences; None with too few regions
    fitted: dict[str, Any] | None = None  # the split's single fitted setting

    @property
    def ran(self) -> bool:
        return self.boots is not None

    def upper(self, alpha: float) -> float:
        """Upper end of the two-sided interval at level ``1 - 2 alpha``."""
        return float(np.quantile(self.boots, 1 - alpha))

    def lower(self, alpha: float) -> float:
        return float(np.quantile(self.boots, alpha))

    def p_value(self) -> float:
        """One-sided bootstrap p of "the candidate is not closer": share of differences >= 0."""
        return float(np.mean(self.boots >= 0))

    def kind(self, alpha: float) -> tuple[Verdict, str | None]:
        """This split's verdict at one-sided level ``alpha``."""
        if not self.ran:
            return Verdict.NOT_ENOUGH_EVIDENCE, None
        if self.upper(alpha) < 0:
            return Verdict.SWITCH, self.candidate
        return Verdict.KEEP, None


def best_candidate(fit_scores: dict[str, float], user_setting: str) -> str:
    """The candidate closest on the fit half, the user's own setting left out (ties by name)."""
    others = {name: s for name, s in fit_scores.items() if name != user_setting}
    return min(others, key=lambda name: (others[name], name))


def split_test(
    fit_scores: dict[str, float],
    held_features: dict[str, dict[str, np.ndarray]],
    held_out: dict[str, np.ndarray],
    groups: list[str],
    n_independent: int,
    geometry: MelGeometry,
    settings: dict[str, Any],
    seed: int,
    fitted: dict[str, Any] | None = None,
) -> SplitTest:
    """Rank on the fit half (``fit_scores``), test the best against the user's setting on the
    held-out half (``held_features``: mask features of every candidate)."""
    user = settings["user_setting"]
    candidate = best_candidate(fit_scores, user)
    n_mels, T = geometry.spectrogram_shape
    pair = {candidate: held_features[candidate], user: held_features[user]}
    point, boots = paired_bootstrap(
        pair, held_out, groups, n_mels, T, settings["n_bootstrap"], seed
    )
    difference = point[candidate] - point[user]
    ran = n_independent >= MIN_INDEPENDENT_HOLDOUT
    return SplitTest(
        candidate,
        n_independent,
        float(difference),
        boots[:, 0] - boots[:, 1] if ran else None,
        fitted,
    )


def holm_levels(p_values: dict[str, float], alpha: float) -> dict[str, float]:
    """Holm's step-down: per tested type the one-sided level its interval is judged at.

    Sorted by p (ties by name), the i-th of m is judged at ``alpha / (m - i)`` while every
    earlier one was rejected (``rejected`` tells, by p); once one is not, the rest are judged
    at the level where the procedure stopped (no later type can pass a level an earlier,
    smaller p failed: Bonferroni over the remaining ones).
    """
    order = sorted(p_values, key=lambda k: (p_values[k], k))
    m, levels, stopped = len(order), {}, None
    for i, key in enumerate(order):
        level = alpha / (m - i) if stopped is None else stopped
        levels[key] = level
        if stopped is None and not p_values[key] < level:
            stopped = level
    return levels


def clips_to_settle(
    test: SplitTest, alpha: float | None, fit_fraction: float, region_share: float
) -> int | None:
    """About how many more anomalous clips would settle an open question.

    With too few independent held-out regions: enough for ``MIN_INDEPENDENT_HOLDOUT``. With a
    test whose candidate is closer by its point estimate but whose interval reaches 0: the
    interval's half-width shrinks as 1/sqrt(n), so about ``n (half-width / |difference|)^2``
    held-out regions would exclude 0. Held-out regions per anomalous clip:
    ``(1 - fit_fraction) * region_share``. None where the candidate is not closer at all.
    """
    per_clip = (1 - fit_fraction) * max(region_share, 1e-9)
    if not test.ran:
        missing = MIN_INDEPENDENT_HOLDOUT - test.n_independent
        return max(1, math.ceil(missing / per_clip))
    if test.difference is None or test.difference >= 0 or alpha is None:
        return None
    half_width = test.upper(alpha) - test.difference
    needed = test.n_independent * (half_width / abs(test.difference)) ** 2
    return max(1, math.ceil((needed - test.n_independent) / per_clip))


def _words(kind: Verdict, candidate: str | None, user: str) -> str:
    return {
        Verdict.SWITCH: f"switch to {candidate}",
        Verdict.KEEP: f"keep {user}",
        Verdict.NOT_ENOUGH_EVIDENCE: "not enough evidence",
    }[kind]


def decide(
    tests: list[SplitTest],
    alpha: float | None,
    user_setting: str,
    fit_fraction: float,
    region_share: float,
) -> VerdictRecord:
    """The verdict from the first split's test at (corrected) one-sided level ``alpha`` and its
    stability over every split in ``tests`` (the first split first)."""
    first = tests[0]
    base = {
        "user_setting": user_setting,
        "n_splits": len(tests),
        "n_independent_holdout": first.n_independent,
        "corrected_level": None if alpha is None else 1 - 2 * alpha,
        "candidate": first.candidate,
        "difference": first.difference,
    }
    if not first.ran or alpha is None:
        return VerdictRecord(
            Verdict.NOT_ENOUGH_EVIDENCE,
            ci_low=None,
            ci_high=None,
            stability_share=None,
            reason=f"{first.n_independent} independent held-out region"
            f"{'s' if first.n_independent != 1 else ''}; a test needs {MIN_INDEPENDENT_HOLDOUT}",
            clips_needed=clips_to_settle(first, None, fit_fraction, region_share),
            **base,
        )
    kind, candidate = first.kind(alpha)
    same = sum(t.kind(alpha) == (kind, candidate) for t in tests)
    share = same / len(tests)
    interval = {"ci_low": first.lower(alpha), "ci_high": first.upper(alpha)}
    said = f"{_words(kind, candidate, user_setting)} in {same} of {len(tests)} splits"
    if share < STABLE_SHARE:
        return VerdictRecord(
            Verdict.NOT_ENOUGH_EVIDENCE,
            stability_share=share,
            reason=f"the verdict flips between splits ({said}; needs {STABLE_SHARE:.0%})",
            clips_needed=clips_to_settle(first, alpha, fit_fraction, region_share),
            **interval,
            **base,
        )
    reason = (
        f"{first.candidate} is distinguishably closer than {user_setting}"
        if kind is Verdict.SWITCH
        else f"no candidate is distinguishably closer than {user_setting} "
        f"(the closest on the fit half, {first.candidate}, was tested)"
    )
    return VerdictRecord(
        kind, stability_share=share, reason=f"{reason}; {said}", **interval, **base
    )


def parameter_spread(tests: list[SplitTest], keys: tuple[str, ...]) -> dict[str, list[float]]:
    """Per fitted parameter its [min, max] over the splits that had a fit."""
    fits = [t.fitted for t in tests if t.fitted]
    return (
        {k: [float(min(f[k] for f in fits)), float(max(f[k] for f in fits))] for k in keys}
        if fits
        else {}
    )
