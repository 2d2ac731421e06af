"""The proxy detector's metrics, by reasoning: AUC, DCASE's pAUC, the rank correlation and
the sentence it supports."""

import numpy as np
import pytest

from analysis.proxy import (
    auc,
    closeness_sentence,
    pauc,
    spearman,
)


def test_auc_and_pauc_of_known_rankings():
    normal, anomalous = np.array([0.1, 0.2, 0.3]), np.array([0.4, 0.5])
    assert auc(normal, anomalous) == 1.0 and pauc(normal, anomalous) == pytest.approx(1.0)
    assert auc(anomalous, normal) == 0.0
    # All anomalous below all normal: partial area 0, McClish: 0.5 (1 + (0 - 0.005) / 0.095).
    assert pauc(anomalous, normal) == pytest.approx(0.5 * (1 - 0.005 / 0.095))
    assert auc(np.zeros(4), np.zeros(3)) == 0.5  # ties count half
    # One anomalous clip above 9 of 10 normal ones, one below all: the ROC rises to 0.5 at
    # FPR 0.1, so the area up to 0.1 is 0.5 * 0.1 (a step at FPR 0.1 adds nothing before it).
    normal = np.arange(10.0)
    anomalous = np.array([8.5, -1.0])
    area = 0.0  # TPR is 0 until FPR reaches 0.1 (the normal clip at 9 ranks first)
    assert pauc(normal, anomalous) == pytest.approx(0.5 * (1 + (area - 0.005) / 0.095))
    assert auc(normal, anomalous) == pytest.approx((9 + 0) / 20)


def test_spearman_and_the_sentence():
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 1, 2]) == pytest.approx(-0.5)
    assert np.isnan(spearman([1, 2], [1, 2]))
    assert closeness_sentence(0.2, 0.9, 3, 40) == "closer masks trained better detectors here"
    assert closeness_sentence(-0.5, 0.5, 3, 40) == "not distinguishable with 40 test clips"
    assert "did not" in closeness_sentence(-1.0, -0.5, 3, 40)
