"""Dose-response of the downstream check and the proxy's own calibration: the path's
interpolation, the curve's shape in words on planted curves, the rank correlation's interval
with the mask score's uncertainty, and the planted copy the calibration scores."""

import numpy as np
import pytest

from analysis.detection import ClipLabels
from analysis.dose_response import (
    curve_shape,
    dose_response,
    family_setting,
    interpolate,
    path_fractions,
    path_settings,
    supported_shape,
)
from analysis.proxy_calibration import (
    PLANTED_SIZE_SD,
    calibration_result,
    fold_into_validity,
    planted_copy,
    planted_grid_masks,
)

N_MELS, T = 128, 320


# ------------------------------------------------------------------ the curve's shape in words

CLOSENESS = [-0.5, -0.4, -0.3, -0.2, -0.1]  # farthest first


@pytest.mark.parametrize(
    ("auc", "words"),
    [
        ([0.60, 0.605, 0.60, 0.595, 0.60], "flat"),  # nothing in it: all within 0.01
        ([0.50, 0.55, 0.60, 0.70, 0.80], "monotone: closer trains better"),
        ([0.50, 0.56, 0.55, 0.70, 0.80], "monotone: closer trains better"),  # a dip within 0.02
        ([0.80, 0.70, 0.60, 0.55, 0.50], "monotone: closer trains worse"),
        ([0.50, 0.70, 0.80, 0.65, 0.55], "peaked"),
        ([0.80, 0.60, 0.50, 0.65, 0.75], "dipped"),
        ([0.50, 0.70, 0.60, 0.65, 0.80], "irregular"),  # ends lowest and highest, a fall inside
    ],
)
def test_curve_shape_names_planted_curves(auc, words):
    assert curve_shape(CLOSENESS, auc, tolerance=0.02) == words
    # The words follow closeness, not the order the settings come in.
    order = np.array([3, 0, 4, 1, 2])
    assert curve_shape(np.array(CLOSENESS)[order], np.array(auc)[order], 0.02) == words


def test_curve_shape_tolerance_decides_flat():
    """The same rise is a trend with tight intervals and flat within wide ones."""
    auc = [0.60, 0.62, 0.64, 0.66, 0.68]
    assert curve_shape(CLOSENESS, auc, 0.01) == "monotone: closer trains better"
    assert curve_shape(CLOSENESS, auc, 0.1) == "flat"
    assert curve_shape(CLOSENESS[:2], auc[:2], 0.01) == "too few settings"


# ------------------------------------------------------------------ the path


def test_interpolation_is_geometric_for_scales_and_linear_for_positions():
    """Half way from a segment length of 10 to 40 the fit's multiplicative steps give 20 (the
    geometric mean), not 25; a band position moves additively: 0 -> 0.5 -> 1 gives 0.25 at
    half way. (Broke: linear for every key -> 25 and the test fails.)"""
    start = family_setting({"min_seg_len": 10, "max_seg_len": 10, "max_band_position": 0.5}, T)
    end = family_setting({"min_seg_len": 40, "max_seg_len": 40, "max_band_position": 1.0}, T)
    start["min_band_position"], end["min_band_position"] = 0.0, 0.5
    half = interpolate(start, end, 0.5, N_MELS, T)
    assert half["min_seg_len"] == 20 and half["max_seg_len"] == 20
    assert half["min_band_position"] == pytest.approx(0.25)
    assert half["max_band_position"] == pytest.approx(0.75)
    assert interpolate(start, end, 0.0, N_MELS, T)["min_seg_len"] == 10
    assert interpolate(start, end, 1.0, N_MELS, T)["max_seg_len"] == 40


def test_path_has_the_interior_points_and_follows_mixture_components():
    current = {"kind": "audio_specific", "min_seg_len": 1, "max_seg_len": 80}
    fitted = {"kind": "audio_specific", **family_setting({"min_seg_len": 100}, T)}
    assert path_fractions(5) == [0.25, 0.5, 0.75]
    path = path_settings(current, fitted, 5, (N_MELS, T))
    assert list(path) == ["path_25", "path_50", "path_75"]
    lengths = [p["min_seg_len"] for p in path.values()]
    assert 1 < lengths[0] < lengths[1] < lengths[2] < 100  # on the way, in order
    assert lengths[1] == 10  # geometric mean of 1 and 100
    mixture = {
        "kind": "mixture",
        "components": [
            {"machine_id": "id_00", "weight": 0.25, "fitted": fitted},
            {"machine_id": "id_02", "weight": 0.75, "fitted": family_setting({}, T)},
        ],
    }
    half = path_settings(current, mixture, 3, (N_MELS, T))["path_50"]
    assert [c["weight"] for c in half["components"]] == [0.25, 0.75]
    assert half["components"][0]["fitted"]["min_seg_len"] == 10
    perlin = {"kind": "dsr_perlin"}
    assert path_settings(perlin, fitted, 5, (N_MELS, T)) == {}  # outside the family: no path
    assert path_settings(current, None, 5, (N_MELS, T)) == {}


# ------------------------------------------------------------------ the rank correlation


def test_mask_score_uncertainty_widens_the_correlation_interval():
    """Five settings whose AUC rises exactly with closeness, AUC resamples tight. With mask
    scores that never change under resampling, rho is 1 in every resample; with resamples
    that reorder the mask scores, the interval reaches well below 1. (Broke: the resampled
    mask scores ignored -> the second interval stays at 1.)"""
    names = [f"s{k}" for k in range(5)]
    points = {n: 0.5 - 0.1 * k for k, n in enumerate(names)}  # s4 closest
    auc = {n: 0.6 + 0.05 * k for k, n in enumerate(names)}
    rng = np.random.default_rng(0)
    auc_boot = {n: np.c_[auc[n] + 0.001 * rng.standard_normal(200), np.zeros(200)] for n in names}
    fixed = {n: np.full(100, points[n]) for n in names}
    found = dose_response(names, points, fixed, auc, auc_boot, 0.9)
    assert found["rho"] == pytest.approx(1.0) and found["ci"] == pytest.approx([1.0, 1.0])
    assert found["shape"] == "monotone: closer trains better"
    noisy = {n: points[n] + 0.2 * rng.standard_normal(100) for n in names}
    wide = dose_response(names, points, noisy, auc, auc_boot, 0.9)
    assert wide["rho"] == pytest.approx(1.0) and wide["ci"][0] < 0.5
    assert wide["mask_score_ci"]["s0"][0] < points["s0"] < wide["mask_score_ci"]["s0"][1]


def test_summary_names_the_shape_with_resampled_mask_scores():
    from analysis.downstream import summarize_type

    rng = np.random.default_rng(1)
    labels = ClipLabels(np.repeat([0, 1], 30), np.tile(["id_00", "id_01"], 30))
    names = ["current", "path_50", "fitted", "training_today"]
    # AUC rises with closeness: noise added to the label shrinks from 'current' to 'fitted'.
    noise = {"training_today": 3.0, "current": 2.0, "path_50": 1.0, "fitted": 0.3}
    scores = {n: labels.label + noise[n] * rng.standard_normal((2, 60)) for n in names}
    masks = {"training_today": 0.6, "current": 0.5, "path_50": 0.3, "fitted": 0.1}
    boot = {n: np.full(50, masks[n]) for n in names}
    cfg = {"ci_level": 0.9, "n_bootstrap": 100, "seed": 0}
    summary = summarize_type(scores, {}, labels, masks, cfg, "current", boot)
    assert summary["rank_correlation"]["rho"] == pytest.approx(1.0)
    assert "AUC against closeness: monotone: closer trains better" in summary["sentence"]
    assert summary["settings"]["fitted"]["mask_score_ci"] == [0.1, 0.1]


# ------------------------------------------------------------------ the proxy's calibration


def test_planted_masks_are_projected_as_training_projects_them():
    masks = planted_grid_masks(20, (N_MELS, T), 4, seed=0)
    assert masks.shape == (20, 32, 80) and set(np.unique(masks)) <= {0.0, 1.0}
    band_rows = (masks.sum(axis=2) > 0).sum(axis=1)
    assert (
        band_rows.min() >= 1 and band_rows.max() <= 5
    )  # 5-10 % of 128 rows: 1-4 grid rows (+1 edge)
    assert (masks.sum(axis=(1, 2)) > 0).all()


def test_planted_copy_adds_the_known_shape_to_normal_clips_only():
    """Normal test clips as they are (label 0) and the same clips plus PLANTED_SIZE_SD x the
    ID's cell SD inside a planted mask, within real frames (label 1); anomalous test clips of
    the data are not used."""
    from analysis.downstream import TypeData

    rng = np.random.default_rng(0)
    test = rng.standard_normal((6, 32, 80)).astype(np.float32)
    data = TypeData(
        train=np.zeros((4, 32, 80), np.float32),
        train_ids=np.array(["id_00", "id_00", "id_01", "id_01"]),
        cell_sd=np.array([1.0, 1.0, 2.0, 2.0], np.float32),
        test=test,
        real_cols=np.array([80, 80, 60, 80, 80, 80]),
        labels=ClipLabels(np.array([0, 0, 0, 1, 1, 1]), np.array(["id_00", "id_01", "id_01"] * 2)),
        train_files=(),
        test_files=("a",) * 6,
        zscore=np.zeros(6),
    )
    copy = planted_copy(data, (N_MELS, T), 4, seed=1)
    assert copy.labels.label.tolist() == [0, 0, 0, 1, 1, 1]
    assert copy.labels.machine_id.tolist() == ["id_00", "id_01", "id_01"] * 2
    np.testing.assert_array_equal(copy.test[:3], test[:3])
    added = copy.test[3:] - test[:3]
    assert added[0].max() == pytest.approx(PLANTED_SIZE_SD * 1.0)
    assert added[1].max() == pytest.approx(PLANTED_SIZE_SD * 2.0)  # id_01's cell SD
    assert np.all(added[2][:, 60:] == 0)  # padded frames untouched
    assert all(np.count_nonzero(a) > 0 for a in added)


def test_calibration_tells_apart_only_with_evidence_and_folds_into_validity():
    labels = ClipLabels(np.repeat([0, 1], 40), np.tile(["id_00", "id_01"], 40))
    rng = np.random.default_rng(2)
    perfect = np.stack([labels.label + 0.1 * rng.random(80)] * 2)
    chance = rng.random((2, 80))
    cfg = {"ci_level": 0.9, "n_bootstrap": 100, "seed": 0}
    good = calibration_result({"matched": perfect, "mismatched": chance}, labels, cfg)
    assert good["tells"] and good["ci"][0] > 0 and "tells a matching" in good["sentence"]
    same = calibration_result({"matched": chance, "mismatched": chance}, labels, cfg)
    assert not same["tells"] and "not evidence" in same["sentence"]
    summary = {"valid": True, "invalid_reason": "", "sentence": "closer masks trained better"}
    fold_into_validity(summary, good)
    assert summary["valid"] and summary["calibration"] is good
    fold_into_validity(summary, same)
    assert not summary["valid"] and "planted" in summary["invalid_reason"]
    assert summary["sentence"].startswith("not valid for this type")
    earlier = {"valid": False, "invalid_reason": "below chance", "sentence": "x"}
    fold_into_validity(earlier, same)
    assert earlier["invalid_reason"] == "below chance"  # the first reason stands


def test_planted_shifted_copy_takes_the_masked_cells_from_a_shifted_clip_of_the_same_id():
    """With the proxy's shifted_copy kind, an anomalous clip equals its normal clip outside the
    mask and, inside, a train clip of its own ID rolled 1-4 rows along mel."""
    from analysis.downstream import TypeData

    rng = np.random.default_rng(3)
    train = rng.standard_normal((4, 32, 80)).astype(np.float32)
    test = rng.standard_normal((2, 32, 80)).astype(np.float32)
    data = TypeData(
        train=train,
        train_ids=np.array(["id_00", "id_00", "id_01", "id_01"]),
        cell_sd=np.ones(4, np.float32),
        test=test,
        real_cols=np.array([80, 80]),
        labels=ClipLabels(np.array([0, 0]), np.array(["id_00", "id_01"])),
        train_files=(),
        test_files=("a", "b"),
        zscore=np.zeros(2),
    )
    copy = planted_copy(data, (N_MELS, T), 4, seed=5, perturbation="shifted_copy")
    for k, own in ((0, [0, 1]), (1, [2, 3])):
        changed = copy.test[2 + k] != test[k]
        assert changed.any()
        candidates = [
            np.roll(train[j], s, axis=0) for j in own for s in (-4, -3, -2, -1, 1, 2, 3, 4)
        ]
        assert any(np.array_equal(copy.test[2 + k][changed], c[changed]) for c in candidates)


def test_a_monotone_shape_is_stated_only_where_the_rank_correlations_interval_supports_it():
    # Point values that fall with closeness, but rho's interval [-0.65, 0.13] includes 0: the
    # report must not say "closer trains worse" (slider's case on the default data).
    worse, better = "monotone: closer trains worse", "monotone: closer trains better"
    assert supported_shape(worse, -0.65, 0.13).startswith("no trend distinguishable")
    assert supported_shape(worse, -0.65, -0.05) == worse
    assert supported_shape(better, 0.05, 0.9) == better
    assert supported_shape(better, -0.1, 0.9).startswith("no trend distinguishable")
    assert supported_shape(better, -0.9, -0.2).startswith("no trend distinguishable")
    assert supported_shape("peaked", -0.2, 0.4) == "peaked"  # judged by its own tolerance
