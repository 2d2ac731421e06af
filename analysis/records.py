"""The records that travel between stages, each defined once.

Stages write and read these through :mod:`analysis.artifacts` (one writer and one reader per
file); this module only says what a record holds and how its keys are made, so no module
formats or parses another's keys:

* :func:`score_key` and :func:`diff_key`: the one place the recommendations row's score and
  score-difference keys are made (``score_current``, ``score_current_ci_low``,
  ``score_noise_level_q_bot``, ``diff_fitted_vs_best_verdict``, ...);
* :class:`MaskSetting`: a setting to draw masks with (a preset entry, a fitted setting, a
  mixture of fitted settings), as it travels from ``recommendations.json`` to the code that
  builds its strategy;
* :class:`RecommendationRow`: one row of ``recommendations.json``;
* :class:`Verdict` and :class:`VerdictRecord`: a row's decision against the user's setting;
* :class:`DownstreamRecord`: ``downstream.json``.

Imports nothing heavy (no numpy): every stage may read these.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, TypedDict

# ----------------------------------------------------------------------------- keys

SCORE_PARTS = ("", "ci_low", "ci_high")  # the point score, and its interval's ends
DIFF_PARTS = ("", "ci_low", "ci_high", "verdict")  # a difference, its interval, its verdict


def score_key(candidate: str, part: str = "", grid: str | None = None) -> str:
    """The row key of ``candidate``'s held-out score: ``part`` "" (the score), ``"ci_low"`` or
    ``"ci_high"`` (its interval); ``grid`` a latent grid's name for the score on that grid.

    >>> score_key("current"), score_key("noise_level", "ci_low"), score_key("current", grid="q_bot")
    ('score_current', 'score_noise_level_ci_low', 'score_current_q_bot')
    """
    if part not in SCORE_PARTS:
        raise ValueError(f"score part {part!r}: one of {SCORE_PARTS}")
    return "_".join(p for p in ("score", candidate, grid or "", part) if p)


def diff_key(a: str, b: str, part: str = "") -> str:
    """The row key of the paired difference score(``a``) - score(``b``) (``a``/``b``: the roles
    compared, e.g. ``fitted`` and ``best``): ``part`` "" (the difference), ``"ci_low"``,
    ``"ci_high"`` or ``"verdict"`` (closer / farther / not distinguishable / no test).

    >>> diff_key("fitted", "best"), diff_key("mixture", "single", "verdict")
    ('diff_fitted_vs_best', 'diff_mixture_vs_single_verdict')
    """
    if part not in DIFF_PARTS:
        raise ValueError(f"difference part {part!r}: one of {DIFF_PARTS}")
    return "_".join(p for p in ("diff", a, "vs", b, part) if p)


# ----------------------------------------------------------------------------- mask settings

DEFAULT_KIND = "audio_specific"  # a setting without ``kind`` (a fitted one) is of this kind
MIXTURE_KIND = "mixture"


@dataclass(frozen=True)
class MaskSetting:
    """A setting to draw masks with: its ``kind`` (``analysis.strategies.registry``) and its
    options. In files and in ``params.yaml`` it is the plain mapping ``{"kind": ..., **options}``
    (:meth:`to_json` / :meth:`from_json`), which ``build_strategy`` takes."""

    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MaskSetting:
        """A preset entry or a stored setting (no ``kind``: ``audio_specific``)."""
        return cls(
            str(data.get("kind", DEFAULT_KIND)), {k: v for k, v in data.items() if k != "kind"}
        )

    @classmethod
    def fitted(cls, fitted: Mapping[str, Any]) -> MaskSetting:
        """A fitted setting (``FIT_KEYS`` of the band-times-segments family)."""
        return cls(DEFAULT_KIND, dict(fitted))

    @classmethod
    def mixture(cls, components: list[dict[str, Any]]) -> MaskSetting:
        """A mixture of fitted settings (``[{"machine_id", "weight", "fitted"}]``)."""
        return cls(MIXTURE_KIND, {"components": components})

    def to_json(self) -> dict[str, Any]:
        """The plain mapping ``{"kind": ..., **options}``."""
        return {"kind": self.kind, **self.options}


# ----------------------------------------------------------------------------- recommendations

OK_STATUS = "ok"
_LACKING = "not enough evidence: "  # a status without a fit: this, then why


def lacking_status(reason: str) -> str:
    """The ``status`` of a row (or a localized unit) without a fit, saying why."""
    return _LACKING + reason


def lacking_reason(status: str) -> str:
    """Why a :func:`lacking_status` has no fit (the reason it was made with)."""
    return status.removeprefix(_LACKING)


class RecommendationRow(TypedDict, total=False):
    """One row of ``recommendations.json`` (a machine type's, ``machine_id`` ``all``, or one
    ID's). Rows with ``status`` ``ok`` also hold every candidate's held-out score and interval
    under :func:`score_key` keys (per latent grid too) and the paired differences under
    :func:`diff_key` keys; ``FIT_KEYS`` (:mod:`analysis.fit`) repeat ``fitted`` flat."""

    machine_type: str
    machine_id: str
    status: str  # "ok", or "not enough evidence: why"
    evidence: str
    n_anomaly: int
    n_regions: int
    n_fit: int
    n_holdout: int
    fitted: dict[str, Any]  # the fitted setting (FIT_KEYS)
    fit_score: float
    form: str  # "single" or "mixture": the fitted form recommended
    mixture: list[dict[str, Any]]  # components: machine_id, weight, fitted
    mixture_left_out: list[str]
    mixture_fit_score: float
    drawn: dict[str, Any]  # the recommended form's masks in Hz and seconds
    best_preset: str
    best_preset_fit_score: float
    intervals: bool
    n_independent_holdout: int
    holdout_files: list[str]
    fit_files: list[str]
    multi_band_share: float
    region_full_clip_share: float
    yardstick: dict[str, Any]
    fitted_spread: dict[str, Any]
    verdict: dict[str, Any]  # VerdictRecord.to_json()


class Verdict(enum.Enum):
    """What a machine type's user should do with the masks they train with."""

    SWITCH = "switch"  # a candidate is distinguishably closer than the user's setting, stably
    KEEP = "keep"  # the test ran with enough regions and no candidate is distinguishably closer
    NOT_ENOUGH_EVIDENCE = "not_enough_evidence"  # too few regions, or a verdict that flips


@dataclass(frozen=True)
class VerdictRecord:
    """One row's decision against the user's setting (``recommendations.json``: ``verdict``).

    ``difference`` is score(candidate) - score(user_setting) on the first split's held-out half,
    ``ci_low``/``ci_high`` its paired bootstrap interval at ``corrected_level`` (Holm over the
    machine types tested); ``stability_share`` the share of the ``n_splits`` splits that give
    this verdict (for not_enough_evidence: the first split's verdict's share); ``clips_needed``
    about how many more anomalous clips would settle it (None where more clips would not, or
    nothing is unsettled); ``downstream`` is left for what the downstream check's training found.
    """

    kind: Verdict
    candidate: str | None
    user_setting: str
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    corrected_level: float | None
    stability_share: float | None
    n_splits: int
    n_independent_holdout: int
    reason: str
    clips_needed: int | None = None
    downstream: dict[str, Any] | None = None

    @classmethod
    def untested(cls, user_setting: str, reason: str, clips_needed: int | None) -> VerdictRecord:
        """Not enough evidence, with no test run (no fit, or no held-out half)."""
        return cls(
            Verdict.NOT_ENOUGH_EVIDENCE, None, user_setting, None, None, None, None, None, 0, 0,
            reason, clips_needed,
        )  # fmt: skip

    @property
    def recommended(self) -> str:
        """The setting to train with: the candidate on switch, else the user's own."""
        return self.candidate if self.kind is Verdict.SWITCH else self.user_setting

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "kind": self.kind.value}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VerdictRecord:
        return cls(**{**data, "kind": Verdict(data["kind"])})


# ----------------------------------------------------------------------------- downstream


@dataclass(frozen=True)
class DownstreamRecord:
    """``downstream.json``: whether the check ran and, per type (``types``), the proxy rows
    per setting, the reference detectors, per-ID rows, validity and the rank correlation."""

    enabled: bool
    how_to_run: str
    types: dict[str, dict[str, Any]] = field(default_factory=dict)
    perturbation: str = ""
    n_parameters: int | None = None
    grid: list[int] = field(default_factory=list)
    baseline: str = ""
    baseline_epochs: int | None = None
    baseline_epochs_published: int | None = None
    train_clips_written: bool = False  # the check wrote its own synthetic train clips
    ci_level: float = 0.9

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DownstreamRecord:
        """The record as ``downstream.json`` holds it (a not-run record has no types)."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @classmethod
    def checked_fields(cls, data: Mapping[str, Any]) -> None:
        """Raise ValueError naming every key of ``data`` that is not a field of the record (a
        new field is declared here before a stage writes it)."""
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"downstream.json: keys not in DownstreamRecord: {unknown}")
