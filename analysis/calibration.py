"""How hard the synthetic default is, measured against published DCASE 2020 Task 2 figures.

The reference is the task's baseline autoencoder (``analysis.baseline_ae``) on the real
development set: its published AUC and pAUC (max FPR 0.1) per machine type and its AUC per
machine ID. ``benchmarks/bench_calibration.py`` trains that autoencoder on a calibration-size
synthetic set and checks the targets below; the CI guard (tests/test_calibration.py) checks a
cheap stand-in, ``analysis.detection.zscore_scores`` (the downstream check's maskless
reference detector: one implementation serves both), on the small default set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.detection import auc, pauc
from analysis.published import (  # noqa: F401 (re-exported for the benchmark and tests)
    PUBLISHED_AUC_PCT,
    PUBLISHED_ID_AUC_PCT,
    PUBLISHED_PAUC_PCT,
)

AUC_TOLERANCE_PTS = 6.0  # per type, |synthetic - published| AUC in percentage points
PAUC_TOLERANCE_PTS = 8.0
MIN_SPREAD_SHARE = 0.5  # the IDs' AUC range is at least this share of the published range
MAX_ID_AUC_PCT = 99.95  # no ID separated perfectly (rounds to 100.0 %)


def published_spread_pts(machine_type: str) -> float:
    """Range (max - min) of the published per-ID AUCs of a type, percentage points."""
    values = PUBLISHED_ID_AUC_PCT[machine_type].values()
    return max(values) - min(values)


@dataclass(frozen=True)
class IdMetrics:
    machine_id: str
    auc_pct: float
    pauc_pct: float


def id_metrics(scores: np.ndarray, labels: np.ndarray, machine_ids: np.ndarray) -> list[IdMetrics]:
    """AUC and pAUC (max FPR 0.1) per machine ID, percent, in sorted ID order."""
    out = []
    for mid in sorted(set(machine_ids.tolist())):
        pick = machine_ids == mid
        normal, anomalous = scores[pick & (labels == 0)], scores[pick & (labels == 1)]
        out.append(IdMetrics(mid, 100 * auc(normal, anomalous), 100 * pauc(normal, anomalous)))
    return out


@dataclass(frozen=True)
class TypeCheck:
    """One machine type against the targets: means over IDs and each target's pass/fail."""

    machine_type: str
    auc_pct: float
    pauc_pct: float
    spread_pts: float
    max_id_auc_pct: float

    @property
    def auc_ok(self) -> bool:
        return abs(self.auc_pct - PUBLISHED_AUC_PCT[self.machine_type]) <= AUC_TOLERANCE_PTS

    @property
    def pauc_ok(self) -> bool:
        return abs(self.pauc_pct - PUBLISHED_PAUC_PCT[self.machine_type]) <= PAUC_TOLERANCE_PTS

    @property
    def spread_ok(self) -> bool:
        return self.spread_pts >= MIN_SPREAD_SHARE * published_spread_pts(self.machine_type)

    @property
    def ceiling_ok(self) -> bool:
        return self.max_id_auc_pct < MAX_ID_AUC_PCT

    @property
    def ok(self) -> bool:
        return self.auc_ok and self.pauc_ok and self.spread_ok and self.ceiling_ok


def check_type(machine_type: str, per_id: list[IdMetrics]) -> TypeCheck:
    """The type's mean AUC / pAUC over its IDs, the IDs' AUC range and the highest ID AUC."""
    aucs = [m.auc_pct for m in per_id]
    return TypeCheck(
        machine_type,
        float(np.mean(aucs)),
        float(np.mean([m.pauc_pct for m in per_id])),
        float(max(aucs) - min(aucs)),
        float(max(aucs)),
    )
