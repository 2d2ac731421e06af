"""The score, the split and the paired bootstrap: tiny hand-computed cases and the mutations
a careful reviewer would try (leaks, a dropped feature, marginals instead of joints, NaN)."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.artifacts import Verdict, parse_region_row, row_verdict
from analysis.artifacts import region_feature_arrays as _features_of
from analysis.evidence import group_seed, split_halves
from analysis.fidelity import resize_fidelity
from analysis.fit import strategy_features
from analysis.mel import MelGeometry
from analysis.recommend import finalize_verdicts, recommend_group
from analysis.regions import FEATURE_COLUMNS, region_features
from analysis.scoring import (
    EMPTY_POINT,
    MIN_HOLDOUT_FOR_CI,
    cluster_resamples,
    mask_points,
    paired_bootstrap,
    score,
    score_points,
)

N_MELS, T = 128, 320
GEOMETRY = MelGeometry()


def feats(**columns) -> dict[str, np.ndarray]:
    """Feature arrays of maps given by the score's inputs (others filled, unused by the score)."""
    n = len(next(iter(columns.values())))
    base = {c: np.full(n, 0.5) for c in FEATURE_COLUMNS}
    base.update(n_bands=np.ones(n), n_segments=np.ones(n), band_fraction=np.full(n, 4 / N_MELS))
    base.update({k: np.asarray(v, dtype=float) for k, v in columns.items()})
    return base


def test_one_point_against_one_point_by_hand():
    # Single points have no pairs, so the score is 2 |x - y|. Only the band centre differs, by
    # 0.25 (weight 1): 0.5.
    mask = feats(band_centre_fraction=[0.5], time_coverage=[1.0])
    real = feats(band_centre_fraction=[0.25], time_coverage=[1.0])
    assert score(mask, real, N_MELS, T) == pytest.approx(0.5)
    # Only the time coverage differs, by 0.5 with weight sqrt(1/2): 2 * 0.5 * sqrt(0.5).
    mask = feats(band_centre_fraction=[0.5], time_coverage=[0.5])
    real = feats(band_centre_fraction=[0.5], time_coverage=[1.0])
    assert score(mask, real, N_MELS, T) == pytest.approx(2 * 0.5 * np.sqrt(0.5))
    assert score(real, real, N_MELS, T) == 0.0
    # Two masks {0, 0.5} against two regions {0.25, 0.75} (band centre only): E|X-Y| =
    # (0.25 + 0.75 + 0.25 + 0.25) / 4 = 0.375, E|X-X'| = E|Y-Y'| = 0.5 over pairs of different
    # members: 2 * 0.375 - 0.5 - 0.5 = -0.25 (the unbiased estimate can fall below 0).
    mask = feats(band_centre_fraction=[0.0, 0.5])
    real = feats(band_centre_fraction=[0.25, 0.75])
    assert score(mask, real, N_MELS, T) == pytest.approx(-0.25)


@pytest.mark.parametrize(
    "column, change",
    [
        ("band_centre_fraction", 0.2),
        ("band_fraction", 20 / N_MELS),
        ("n_bands", 2.0),
        ("time_coverage", -0.4),
        ("n_segments", 6.0),
    ],
)
def test_every_feature_group_moves_the_score(column, change):
    rng = np.random.default_rng(0)
    real = feats(
        band_centre_fraction=rng.uniform(0.3, 0.6, 50),
        time_coverage=rng.uniform(0.5, 0.9, 50),
    )
    moved = {k: v.copy() for k, v in real.items()}
    moved[column] = moved[column] + change
    assert score(moved, real, N_MELS, T) > 0.05 > abs(score(real, real, N_MELS, T))


def test_the_score_sees_which_band_goes_with_which_time_pattern():
    # Same marginals, different pairing: narrow bands with short patterns and wide bands with
    # full-clip ones, against the swap. A distance of marginals cannot tell them apart.
    narrow, wide = 2 / N_MELS, 30 / N_MELS
    real = feats(band_fraction=[narrow, wide] * 20, time_coverage=[0.1, 1.0] * 20)
    swapped = feats(band_fraction=[narrow, wide] * 20, time_coverage=[1.0, 0.1] * 20)
    assert score(swapped, real, N_MELS, T) > 0.2 > abs(score(real, real, N_MELS, T))


def test_empty_masks_count_and_an_all_empty_preset_is_worst():
    rng = np.random.default_rng(1)
    real = feats(band_centre_fraction=rng.uniform(0.2, 0.8, 40))
    clean = feats(band_centre_fraction=rng.uniform(0.2, 0.8, 400))
    half_empty = {k: v.copy() for k, v in clean.items()}
    for k in half_empty:
        half_empty[k][::2] = np.nan
    far = feats(band_centre_fraction=np.full(400, 1.0), n_bands=np.full(400, 8.0))
    empty = {k: np.full(400, np.nan) for k in clean}
    scores = {
        name: score(f, real, N_MELS, T)
        for name, f in {
            "clean": clean,
            "half_empty": half_empty,
            "far": far,
            "empty": empty,
        }.items()
    }
    assert all(np.isfinite(v) for v in scores.values())
    assert scores["clean"] < scores["half_empty"] < scores["empty"]
    assert scores["far"] < scores["empty"] and min(scores, key=scores.get) == "clean"
    assert EMPTY_POINT < 0


def test_split_puts_every_clip_in_exactly_one_half_per_group():
    files = [f"f{i:03d}" for i in range(40)]
    groups = ["id_00"] * 10 + ["id_02"] * 30
    in_fit = split_halves(files, groups, 0.5, seed=3)
    assert in_fit[:10].sum() == 5 and in_fit[10:].sum() == 15
    assert np.array_equal(in_fit, split_halves(files, groups, 0.5, seed=3))
    assert not np.array_equal(in_fit, split_halves(files, groups, 0.5, seed=4))
    # The assignment follows the files, not their order in the list.
    order = np.random.default_rng(0).permutation(40)
    shuffled = split_halves([files[i] for i in order], [groups[i] for i in order], 0.5, seed=3)
    assert np.array_equal(shuffled, in_fit[order])


def test_cluster_resamples_draw_whole_machine_ids():
    groups = ["id_00"] * 10 + ["id_02"] * 10
    draws = cluster_resamples(groups, 400, np.random.default_rng(0))
    one_id = [len({groups[i] for i in d}) == 1 for d in draws]
    # Two IDs drawn with replacement: both draws the same ID half of the time.
    assert 0.4 < np.mean(one_id) < 0.6
    plain = cluster_resamples(["id_00"] * 20, 400, np.random.default_rng(0))
    assert all(d.size == 20 and d.max() < 20 for d in plain)


def test_paired_interval_of_a_known_difference_covers_it():
    # Masks A are drawn like the real regions, masks B are shifted in band centre. The true
    # difference score(A) - score(B) is taken from a large real sample; 90 % intervals from
    # 40-region samples should cover it about 90 % of the time (at least 75 % of 40 runs).
    rng = np.random.default_rng(2)

    def regions(n, shift=0.0):
        return feats(
            band_centre_fraction=rng.uniform(0.3, 0.5, n) + shift,
            time_coverage=rng.uniform(0.2, 1.0, n),
        )

    a, b = regions(600), regions(600, shift=0.1)
    big = regions(4000)
    truth = score(a, big, N_MELS, T) - score(b, big, N_MELS, T)
    covered = []
    for run in range(40):
        real = regions(40)
        point, boots = paired_bootstrap(
            {"a": a, "b": b}, real, ["x"] * 40, N_MELS, T, n_boot=200, seed=run
        )
        diff = boots[:, 0] - boots[:, 1]
        lo, hi = np.quantile(diff, [0.05, 0.95])
        covered.append(lo <= truth <= hi)
        assert point["a"] - point["b"] == pytest.approx(
            score(a, real, N_MELS, T) - score(b, real, N_MELS, T)
        )
    assert np.mean(covered) >= 0.75


def fake_rows(n, machine_id="id_00", seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        row = {"file": f"fan/test/anomaly_{machine_id}_{i:08d}.wav", "machine_id": machine_id}
        row["found"] = "1"
        row.update({c: str(rng.uniform(0.1, 0.9)) for c in FEATURE_COLUMNS})
        row["n_bands"], row["n_segments"] = "1", str(int(rng.integers(1, 5)))
        row["band_centre_bin"] = str(float(row["band_centre_fraction"]) * N_MELS - 0.5)
        rows.append(parse_region_row(row))
    return rows


@pytest.fixture
def settings(params):
    s = dict(params["recommend"])
    s.update(n_masks_per_candidate=64, n_search_candidates=8, n_refine_rounds=1, n_bootstrap=50)
    return s


def test_masks_made_once_score_exactly_as_their_features():
    """Presets are made into points once (recommend scores them in every group and split):
    the score and the paired bootstrap must not change by a bit, and both must be the energy
    distance computed here by brute force over every pair."""
    rng = np.random.default_rng(3)
    masks = feats(band_centre_fraction=rng.uniform(0, 1, 40), time_coverage=rng.uniform(0, 1, 40))
    real = feats(band_centre_fraction=rng.uniform(0, 1, 9), n_segments=rng.integers(1, 6, 9))
    x, y = score_points(masks, N_MELS, T), score_points(real, N_MELS, T)

    def mean_distance(a, b, skip_self):
        d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
        return d.sum() / (d.size - (len(a) if skip_self else 0))

    by_hand = 2 * mean_distance(x, y, False) - mean_distance(x, x, True) - mean_distance(y, y, True)
    made = mask_points(masks, N_MELS, T)
    assert score(made, real, N_MELS, T) == score(masks, real, N_MELS, T)
    assert score(made, real, N_MELS, T) == pytest.approx(by_hand, rel=1e-12)
    groups = ["id_00"] * 9
    point_f, boots_f = paired_bootstrap({"a": masks}, real, groups, N_MELS, T, 20, 0)
    point_m, boots_m = paired_bootstrap({"a": made}, real, groups, N_MELS, T, 20, 0)
    assert point_f == point_m
    np.testing.assert_array_equal(boots_f, boots_m)


def test_masks_made_for_another_grid_are_refused():
    made = mask_points(feats(band_fraction=np.full(5, 0.1)), 32, 80)  # the q_bot grid
    with pytest.raises(ValueError, match=r"\(32, 80\) grid scored on \(128, 320\)"):
        score(made, feats(band_fraction=np.full(5, 0.1)), N_MELS, T)


def test_a_row_is_the_same_with_presets_made_once(settings):
    """A type row with repeated splits: presets as features or as points made once give the
    same row, verdict tests included."""
    rows = fake_rows(12, "id_00") + fake_rows(12, "id_02", seed=1)
    presets = {
        "current": strategy_features({}, GEOMETRY, 200, seed=0),
        "wide": strategy_features(
            {"min_band_fraction": 0.3, "max_band_fraction": 0.5}, GEOMETRY, 200, seed=1
        ),
    }
    settings.update(n_splits=3)
    made = {name: mask_points(f, N_MELS, T) for name, f in presets.items()}
    a = recommend_group("fan", "all", rows, {}, presets, GEOMETRY, settings)
    b = recommend_group("fan", "all", rows, {}, made, GEOMETRY, settings)
    tests_a, tests_b = a.pop("_tests"), b.pop("_tests")
    assert len(tests_a) == len(tests_b) == 3  # the first split ran a test, so 2 more splits
    for t_a, t_b in zip(tests_a, tests_b, strict=True):
        assert (t_a.candidate, t_a.difference, t_a.fitted) == (
            t_b.candidate,
            t_b.difference,
            t_b.fitted,
        )
        np.testing.assert_array_equal(t_a.boots, t_b.boots)
    assert repr(a) == repr(b)


def test_held_out_scores_use_only_held_out_clips_and_best_preset_the_fit_half(settings):
    rows = fake_rows(24)
    presets = {
        "current": strategy_features({}, GEOMETRY, 300, seed=0),
        "wide": strategy_features(
            {"min_band_fraction": 0.3, "max_band_fraction": 0.5}, GEOMETRY, 300, seed=1
        ),
    }
    row = recommend_group("fan", "id_00", rows, {}, presets, GEOMETRY, settings)
    assert row["status"] == "ok" and row["n_fit"] + row["n_holdout"] == 24
    held = set(row["holdout_files"])
    assert len(held) == row["n_holdout"] == 12
    by_file = {r["file"]: r for r in rows}
    held_feats = _features_of([by_file[f] for f in sorted(held)])
    fit_feats = _features_of([r for r in rows if r["file"] not in held])
    for name, f in presets.items():  # recomputed independently on the held-out clips only
        assert row[f"score_{name}"] == pytest.approx(score(f, held_feats, N_MELS, T))
    fit_scores = {name: score(f, fit_feats, N_MELS, T) for name, f in presets.items()}
    assert row["best_preset"] == min(fit_scores, key=fit_scores.get)
    assert row["intervals"] and row["diff_fitted_vs_best_ci_low"] <= row["diff_fitted_vs_best"]


def test_the_closest_preset_is_chosen_on_the_fit_half(settings):
    # Fit-half regions look like preset 'narrow', held-out ones like preset 'wide': the row must
    # name 'narrow' (chosen where the fit was made) and report it on the held-out half, where it
    # loses; choosing on the held-out half would pick 'wide'.
    rows = fake_rows(24)
    in_fit = split_halves(
        [r["file"] for r in rows],
        [r["machine_id"] for r in rows],
        settings["fit_fraction"],
        group_seed(settings, "fan", "id_00"),
    )
    for r, fit in zip(rows, in_fit, strict=True):
        r["band_fraction"] = str((3 if fit else 40) / N_MELS)
    presets = {
        "narrow": feats(band_fraction=np.full(200, 3 / N_MELS)),
        "wide": feats(band_fraction=np.full(200, 40 / N_MELS)),
    }
    settings["user_setting"] = "wide"
    row = recommend_group("fan", "id_00", rows, {}, presets, GEOMETRY, settings)
    assert row["best_preset"] == "narrow"
    assert row["score_narrow"] > row["score_wide"]


def test_too_few_held_out_clips_give_no_interval_and_no_claim(settings):
    settings.update(min_anomaly_clips=2, min_region_share=0.1)
    presets = {"current": strategy_features({}, GEOMETRY, 100, seed=0)}
    row = recommend_group("fan", "id_00", fake_rows(6), {}, presets, GEOMETRY, settings)
    assert row["status"] == "ok" and row["n_holdout"] == 3 < MIN_HOLDOUT_FOR_CI
    assert not row["intervals"] and row["score_current_ci_low"] is None
    assert (
        row["diff_fitted_vs_best_verdict"] == "no test"
    )  # never "not distinguishable" without a test


@pytest.mark.parametrize("fit_fraction", [0.9, 0.1])
def test_an_empty_half_is_not_enough_evidence_never_nan(settings, fit_fraction):
    settings.update(min_anomaly_clips=2, min_region_share=0.1, fit_fraction=fit_fraction)
    presets = {"current": strategy_features({}, GEOMETRY, 100, seed=0)}
    row = recommend_group("fan", "id_00", fake_rows(2), {}, presets, GEOMETRY, settings)
    assert row["status"].startswith("not enough evidence")
    assert "score_current" not in row


def test_band_fraction_is_not_band_extent():
    m = np.zeros((N_MELS, T), dtype=bool)
    m[10:14, :50] = True
    m[60:62, :50] = True  # two bands: 6 rows, spanning 52
    f = {k: v[0] for k, v in region_features(m).items()}
    assert f["band_fraction"] == 6 / N_MELS and f["band_extent_fraction"] == 52 / N_MELS
    assert f["n_bands"] == 2


def test_retained_area_counts_the_whole_projected_mask():
    # One mel row and 10 frames on the /4 grid: any-cell marks 1 latent row x 3 latent
    # columns (frames 0-3, 4-7, 8-11), which come back as 4 rows x 12 frames = 48 cells.
    m = np.zeros((1, N_MELS, T), dtype=bool)
    m[0, 41, 2:12] = True
    fid = resize_fidelity(m, (32, 80), "any_cell")
    assert fid["retained_area"][0] == pytest.approx(48 / 10)
    assert fid["iou"][0] == pytest.approx(10 / 48)


def test_a_pooled_region_counts_once_however_many_clips_it_stands_for(settings):
    # Two IDs with ID-level evidence only: 16 held-out "regions" but 2 independent ones, so no
    # interval and no claim (a degenerate interval from copies of one map would look certain).
    pooled = {c: 0.5 for c in FEATURE_COLUMNS}
    pooled.update(n_bands=1.0, n_segments=1.0, time_coverage=1.0, band_fraction=6 / N_MELS)
    summaries = {}
    rows = []
    for mid in ("id_01", "id_02"):
        rows += [{**r, "found": "0"} for r in fake_rows(16, machine_id=mid)]
        half = {"found": True, "features": pooled, "rows": [60, 61]}
        summaries[mid] = {"id_level": {"all": half, "fit": half, "holdout": half}}
    presets = {"current": strategy_features({}, GEOMETRY, 200, seed=0)}
    row = recommend_group("ToyCar", "all", rows, summaries, presets, GEOMETRY, settings)
    assert row["status"] == "ok" and row["evidence"] == "ID-level"
    assert row["n_holdout"] == 16 and row["n_independent_holdout"] == 2
    assert not row["intervals"] and row["diff_fitted_vs_best_verdict"] == "no test"


def test_resampled_within_terms_leave_out_copies_of_one_member():
    """The bootstrap's within-sample term must be unbiased like the point one: averaged over
    resamples it matches the plain mean over pairs of different members. Counting the zero
    distance between two copies of one member (the old way) is low by about 1/n."""
    from analysis.scoring import _within, within_resampled

    rng = np.random.default_rng(0)
    points = rng.normal(size=(10, 3))
    d = np.linalg.norm(points[:, None] - points[None], axis=-1)
    point = _within(d)
    resampled = [within_resampled(d, rng.integers(0, 10, 10)) for _ in range(4000)]
    assert np.mean(resampled) == pytest.approx(point, rel=0.02)
    # The old term, for contrast: about 10 % low with 10 members.
    naive = [_within(d[np.ix_(i, i)]) for i in (rng.integers(0, 10, 10) for _ in range(4000))]
    assert np.mean(naive) < 0.93 * point
    # Exactly the mean over pairs of different draws, by brute force on one resample.
    idx = np.array([0, 0, 3, 5, 5, 5, 7, 8, 9, 9])
    pairs = [d[idx[a], idx[b]] for a in range(10) for b in range(10) if idx[a] != idx[b]]
    assert within_resampled(d, idx) == pytest.approx(np.mean(pairs))


def test_point_scores_lie_inside_their_intervals(settings):
    """With the bias gone, each candidate's point score lies inside its own bootstrap interval."""
    from analysis.scoring import interval

    rows = fake_rows(30)
    presets = {
        "current": strategy_features({}, GEOMETRY, 300, seed=0),
        "close": strategy_features(
            {
                "min_band_fraction": 0.1,
                "max_band_fraction": 0.9,
                "min_segments": 1,
                "max_segments": 4,
            },
            GEOMETRY,
            300,
            seed=1,
        ),
    }
    real = _features_of(rows)
    point, boots = paired_bootstrap(presets, real, ["id_00"] * 30, N_MELS, T, 400, seed=3)
    for j, name in enumerate(presets):
        lo, hi = interval(boots[:, j], 0.9)
        assert lo <= point[name] <= hi, (name, lo, point[name], hi)


def test_bootstrap_scores_centre_on_the_point_score():
    """Resampling the held-out regions must not shift the score: the bootstrap mean stays near
    the point score (with copies counted as pairs it moved up by about yy / n: +0.028 here, half
    a standard deviation, with 12 regions)."""
    rows = fake_rows(12)
    candidates = {"current": strategy_features({}, GEOMETRY, 300, seed=0)}
    point, boots = paired_bootstrap(
        candidates, _features_of(rows), ["id_00"] * 12, N_MELS, T, 2000, 3
    )
    assert abs(boots[:, 0].mean() - point["current"]) < 0.01


def test_a_row_without_a_fit_half_reads_not_enough_evidence(settings):
    thin = recommend_group("fan", "id_00", fake_rows(1), {}, {}, GEOMETRY, settings)
    finalize_verdicts([thin], settings)
    assert row_verdict(thin).kind is Verdict.NOT_ENOUGH_EVIDENCE
    assert row_verdict(thin).user_setting == "current" and row_verdict(thin).ci_low is None


def test_the_noise_level_is_the_fit_half_scored_against_the_held_out_half(settings):
    """The yardstick beside every score: the fit half's real regions as if they were masks,
    scored on the held-out half, with an interval from the same paired resamples."""
    rows = fake_rows(24)
    presets = {"current": strategy_features({}, GEOMETRY, 300, seed=0)}
    row = recommend_group("fan", "id_00", rows, {}, presets, GEOMETRY, settings)
    by_file = {r["file"]: r for r in rows}
    held = _features_of([by_file[f] for f in row["holdout_files"]])
    fit = _features_of([by_file[f] for f in row["fit_files"]])
    assert sorted(row["fit_files"] + row["holdout_files"]) == sorted(by_file)
    noise = row["score_noise_level"]
    assert noise == pytest.approx(score(fit, held, N_MELS, T))
    assert row["score_noise_level_ci_low"] <= noise <= row["score_noise_level_ci_high"]
    # Both halves come from one distribution: the noise level is near 0, far below a preset of
    # narrow bands and many segments scored on the same regions.
    assert abs(noise) < 0.1 < row["score_current"]
