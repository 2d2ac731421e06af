"""Localization at realistic strength: the two levels of evidence, their calibration, and
the negative controls. Anomalies here are weaker than one clip's noise, as real ones are."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from scipy import ndimage

from analysis.artifacts import parse_region_row
from analysis.evidence import id_evidence
from analysis.io import read_json
from analysis.localization.clip_level import (
    calibrated_threshold,
    critical_level,
    detect_regions,
    out_of_fold_levels,
    out_of_sample_false_rate,
    reference_stats,
    z_maps,
)
from analysis.localization.id_level import pooled_evidence
from analysis.localization.maps import clean_region
from analysis.regions import region_features


@pytest.fixture
def loc(default_params):
    return copy.deepcopy(default_params["localization"])


def noise(rng, n, shape=(128, 320)):
    """Log-mel-like noise: neighbouring cells correlated (2 x 2 box), unit pixel SD."""
    x = ndimage.uniform_filter(rng.standard_normal((n, *shape)), size=(1, 2, 2))
    return x / x.std()


def test_a_half_sigma_whole_clip_band_is_found_at_id_level(loc):
    # A 6-bin band raised by 0.5 within-ID pixel SD for the whole clip, 100 + 100 clips. No single
    # clip shows it (see the clip-level check below), but the pooled test must: averaged over the
    # clip its t is about 0.5 / sqrt(2 / 100) * sqrt(effective frames), far above any null maximum.
    rng = np.random.default_rng(0)
    normal, anomaly = noise(rng, 100), noise(rng, 100)
    anomaly[:, 60:66, :] += 0.5
    result = pooled_evidence(normal, anomaly, loc, seed=1)
    assert result["p_value"] < loc["id_level_alpha"]
    f = {k: v[0] for k, v in region_features(result["region"]).items()}
    assert abs(f["band_centre_bin"] - 62.5) <= 2  # truth: bins 60..65
    assert f["time_coverage"] >= 0.9 and f["n_segments"] == 1 and f["n_bands"] == 1
    # Box smoothing over 3 bins may widen the band by a bin on each side, no more.
    assert 6 <= f["band_fraction"] * 128 <= 8
    # At the clip level the same band is mostly invisible: that is why the pooled level exists.
    levels, folds, _, _ = out_of_fold_levels(normal, loc)
    threshold = calibrated_threshold(levels, loc["clip_false_region_rate"])
    _, crit = detect_regions(normal, anomaly, threshold, loc)
    assert np.mean(crit > threshold) < 0.5


def test_windowed_multi_line_anomaly_at_id_level(loc):
    # Three 2-bin lines, 12+ bins apart, +0.5 SD inside frames 40..279 (a toy machine's active
    # window), 100 + 100 clips: three bands and the window's time extent. The window-scale box
    # (32 frames) straddling an edge still sees part of the effect, so the extent may overshoot
    # each edge by up to half a window.
    rng = np.random.default_rng(1)
    normal, anomaly = noise(rng, 100), noise(rng, 100)
    for low in (30, 50, 90):
        anomaly[:, low : low + 2, 40:280] += 0.5
    result = pooled_evidence(normal, anomaly, loc, seed=2)
    assert result["p_value"] < loc["id_level_alpha"]
    region = result["region"]
    f = {k: v[0] for k, v in region_features(region).items()}
    assert f["n_bands"] == 3
    frames = np.flatnonzero(region.any(axis=0))
    assert abs(frames[0] - 40) <= 16 and abs(frames[-1] - 279) <= 16
    rows = np.flatnonzero(region.any(axis=1))
    assert set(rows) <= set(range(28, 34)) | set(range(48, 54)) | set(range(88, 94))


def test_pooled_null_and_thresholds_come_from_normal_clips_only(loc):
    rng = np.random.default_rng(2)
    normal = noise(rng, 40)
    quiet, loud = noise(rng, 20), noise(rng, 20)
    loud[:, 10:20, :] += 3.0
    a = pooled_evidence(normal, quiet, loc, seed=3)
    b = pooled_evidence(normal, loud, loc, seed=3)
    assert a["thresholds"] == b["thresholds"]  # the anomalous clips never shape the null
    assert b["p_value"] < loc["id_level_alpha"] <= a["p_value"]


def test_out_of_fold_levels_never_use_the_clip_they_measure(loc):
    # Recompute one clip's critical level by hand, against the normal clips of the other folds.
    rng = np.random.default_rng(3)
    normal = noise(rng, 10, shape=(32, 80))
    normal[3, 5:9, 20:40] += 2.5  # clip 3 stands out; a leak would hide it in its own reference
    loc.update(min_region_cells=10, n_folds=5)
    levels, folds, _, _ = out_of_fold_levels(normal, loc)
    others = normal[folds != folds[3]]
    mean = others.mean(axis=0)
    var = ((others - mean) ** 2).mean(axis=0) * len(others) / (len(others) - 1)
    scale = np.sqrt(
        ndimage.uniform_filter1d(var, size=loc["window_frames"], axis=1, mode="nearest")
    )
    z = np.abs(
        ndimage.uniform_filter((normal[3] - mean) / (scale + 1e-6), size=(3, 3), mode="nearest")
    )
    assert levels[3] == pytest.approx(critical_level(z, 10), abs=1e-2)
    assert levels[3] > np.delete(levels, 3).max()


def test_false_region_rate_is_judged_by_thresholds_set_without_the_fold():
    # Fold 0's clips all have high critical levels. Judged by a threshold from the other folds
    # they are all flagged; a threshold that included them (a leak) would let them pass.
    levels = np.array([9.0, 9.0, 9.0, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5])
    folds = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    flagged = out_of_sample_false_rate(levels, folds, rate=0.25)
    assert flagged[:3].all()
    assert calibrated_threshold(levels, 0.25) >= 9.0  # what the leak would have used


def test_critical_level_matches_a_threshold_scan():
    rng = np.random.default_rng(4)
    z = np.abs(rng.standard_normal((32, 64)))
    z[5:10, 10:20] += 3.0
    level = critical_level(z, 40)
    for t in np.linspace(0, z.max(), 60):
        mask = clean_region(z > t, 40)
        assert mask.any() == (t < level - 1e-6) or abs(t - level) < 0.01


def test_fragments_of_one_band_merge_into_one_segment():
    mask = np.zeros((20, 320), dtype=bool)
    for start in range(0, 320, 30):  # 17-frame pieces with 13-frame gaps
        mask[8:12, start : start + 17] = True
    merged = clean_region(mask, 10, merge_gap_frames=16)
    f = {k: v[0] for k, v in region_features(merged).items()}
    assert f["n_segments"] == 1 and f["time_coverage"] > 0.9
    kept_apart = clean_region(mask, 10, merge_gap_frames=8)
    assert region_features(kept_apart)["n_segments"][0] == 11


def test_scale_follows_an_active_window(loc):
    # Normal clips louder and more variable in frames 100..199 (a toy machine running): a
    # clip-wide scale would under-scale that window and find false regions there.
    rng = np.random.default_rng(5)
    normal = noise(rng, 30, shape=(16, 300))
    normal[:, :, 100:200] *= 4.0
    _, scale = reference_stats(normal, loc["window_frames"])
    inside, outside = scale[:, 120:180].mean(), scale[:, :80].mean()
    assert 3.0 < inside / outside < 5.0
    z = z_maps(
        noise(rng, 1, shape=(16, 300)) * np.r_[np.ones(100), 4 * np.ones(100), np.ones(100)],
        *reference_stats(normal, 32),
        (3, 3),
    )
    assert z[0, :, 120:180].mean() < 1.5 * z[0, :, :80].mean()


def rows_for(machine_id, found_centres, n_missing):
    rows = []
    for i, centre in enumerate(found_centres + [None] * n_missing):
        row = {"file": f"t/test/anomaly_{machine_id}_{i:08d}.wav", "machine_id": machine_id}
        row["found"] = "0" if centre is None else "1"
        row["band_centre_bin"] = "" if centre is None else str(centre)
        rows.append(parse_region_row(row))
    return rows


def summary(found_all, rows=(), halves=True):
    part = {"found": found_all, "p_value": 0.01 if found_all else 0.4, "rows": list(rows)}
    half = {"found": found_all and halves, "features": {}}
    return {"id_level": {"all": part, "fit": half, "holdout": half}}


@pytest.mark.parametrize(
    "centres, missing, pooled, expected",
    [
        ([40.0] * 8, 2, summary(True, range(38, 44)), "clip-level"),  # enough, and they agree
        ([40.0] * 8, 2, summary(False), "clip-level"),  # transients the mean does not show
        ([90.0] * 8, 2, summary(True, range(38, 44)), "ID-level"),  # they disagree: pooled wins
        ([40.0] * 2, 8, summary(True, range(38, 44)), "ID-level"),  # too few clip-level regions
        ([40.0] * 2, 8, summary(True, range(38, 44), halves=False), None),
        ([40.0] * 2, 8, summary(False), None),
    ],
)
def test_each_id_uses_the_evidence_it_has(params, centres, missing, pooled, expected):
    settings = params["recommend"]
    settings.update(min_anomaly_clips=6, min_region_share=0.5)
    decision = id_evidence(rows_for("id_00", centres, missing), pooled, settings)
    assert decision["evidence"] == expected
    if expected is None:
        assert decision["reason"]


@pytest.mark.slow
def test_negative_control_normal_clips_posing_as_anomalous(tmp_path, default_params):
    """Normal clips of every synthetic machine type, half relabelled as anomalous, through
    extract and localize: the clip-level false-region rate stays within 5 % per type (the
    threshold targets 2 %), and the ID-level test finds a region in at most 10 % of the IDs (its
    family-wise level is 5 %)."""
    from analysis.extract import extract
    from analysis.io import load_npz, read_json, save_npz
    from analysis.localize import localize
    from analysis.synthesize import synthesize

    params = copy.deepcopy(default_params)
    params["synthetic"].update(
        train_clips_per_id=4, test_normal_clips_per_id=32, test_anomaly_clips_per_id=1, n_jobs=2
    )
    root = synthesize(params, tmp_path / "synthetic")
    rates, id_regions, n_ids = {}, 0, 0
    for machine_type in params["data"]["machine_types"]:
        features = extract(params, machine_type, data_root=root, out_dir=tmp_path / machine_type)
        data = load_npz(features / "test.npz")
        keep = data["label"] == 0  # drop the real anomalies
        label = np.zeros(int(keep.sum()), dtype=np.int8)
        label[1::2] = 1  # every other normal clip poses as anomalous
        save_npz(
            features / "test.npz",
            **{k: (v[keep] if v.ndim else v) for k, v in data.items() if k != "label"},
            label=label,
        )
        (features / "ground_truth.csv").write_text(
            (features / "ground_truth.csv").read_text().splitlines()[0] + "\n"
        )
        localize(params, machine_type, features_dir=features, out_dir=tmp_path / "loc")
        summary = read_json(tmp_path / "loc" / f"{machine_type}.json")
        rates[machine_type] = summary["n_regions_found"] / summary["n_anomaly"]
        for s in summary["ids"].values():
            n_ids += 1
            id_regions += bool(s["id_level"]["all"]["found"])
    assert all(rate <= 0.05 for rate in rates.values()), rates
    assert id_regions <= 0.1 * n_ids, (id_regions, n_ids)


def test_split_statistic_equals_scipys_welch_t():
    """The null's fast float32 statistic against scipy's Welch t, split by split."""
    from scipy import stats

    from analysis.localization.id_level import max_abs_split_t

    rng = np.random.default_rng(11)
    x = (rng.standard_normal((14, 300)) * 2 + 5).astype(np.float32)
    x[:, :10] += rng.standard_normal((14, 1)).astype(np.float32)  # some cells correlated
    m = 4
    picks = np.zeros((25, 14), dtype=np.float32)
    for r in range(25):
        picks[r, rng.choice(14, m, replace=False)] = 1
    expected = [
        np.abs(stats.ttest_ind(x[p == 1], x[p == 0], equal_var=False).statistic).max()
        for p in picks
    ]
    got = max_abs_split_t(picks, x, m, chunk=3)  # chunks that do not divide the splits evenly
    assert np.allclose(got, expected, rtol=1e-4)


def test_localize_output_does_not_depend_on_the_number_of_cores(params, tmp_path, monkeypatch):
    """IDs run in a process pool (one BLAS thread each) or, on one core, in the stage's own
    process: both must write the same bytes. Two BLAS threads round the permutation test's
    float32 matmuls differently, so the serial path must limit itself to one as well."""
    import analysis.localize as localize_module
    from analysis.io import save_npz

    rng = np.random.default_rng(5)
    n_per_class, ids = 12, ["id_00", "id_02"]
    logmel = rng.standard_normal((2 * n_per_class * len(ids), 128, 320)).astype(np.float32)
    label = np.tile(np.repeat(np.array([0, 1], np.int8), n_per_class), len(ids))
    logmel[label == 1, 40:46, :] += 0.8  # a weak stationary band in every anomalous clip
    machine_id = np.repeat(ids, 2 * n_per_class)
    files = [
        f"fan/test/{'anomaly' if lab else 'normal'}_{m}_{i:08d}.wav"
        for i, (m, lab) in enumerate(zip(machine_id, label, strict=True))
    ]
    features = tmp_path / "features"
    features.mkdir()
    save_npz(
        features / "test.npz",
        file=np.array(files),
        label=label,
        logmel=logmel,
        machine_id=machine_id,
        n_frames=np.full(label.size, 320, np.int32),
    )
    (features / "ground_truth.csv").write_text(
        "file,kind,f_lo_hz,f_hi_hz,t_start_s,t_end_s,gain_db\n"
    )
    outputs = {}
    for n_jobs in (2, 1):
        monkeypatch.setattr(localize_module, "resolve_n_jobs", lambda _, n=n_jobs: n)
        out = tmp_path / f"loc{n_jobs}"
        localize_module.localize(params, "fan", features_dir=features, out_dir=out)
        outputs[n_jobs] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert outputs[1] == outputs[2]
    assert len(outputs[1]) == 3


def test_exceeds_critical_level_agrees_with_the_bisection_exactly():
    """The early-stopping test must answer ``critical_level(z) > t`` for every t, including t
    at the level itself, just below and above it, at 0, negative, and for a map without any
    region; the power stage relies on it in place of the level."""
    from scipy import ndimage

    from analysis.localization.clip_level import critical_level, exceeds_critical_level

    rng = np.random.default_rng(3)
    min_cells = 40
    maps = [np.abs(ndimage.uniform_filter(rng.standard_normal((64, 96)), 3)) for _ in range(12)]
    band = maps[0].copy()
    band[20:24, 10:80] += 2.0  # one clear region
    maps += [band, np.zeros((64, 96)), np.ones((4, 5))]  # the last smaller than min_cells
    checked = 0
    for z in maps:
        level = critical_level(z, min_cells)
        eps = 1e-3 * max(level, 1.0)
        thresholds = [-0.5, 0.0, level, level - eps / 7, level + eps / 7, level * 0.5, level * 2]
        thresholds += list(rng.uniform(0, 3, 10))
        for t in thresholds:
            assert exceeds_critical_level(z, t, min_cells) == (level > t), (level, t)
            checked += 1
    assert checked == 15 * 17


def test_an_id_whose_negative_control_found_a_region_supports_nothing(params):
    """Its normal clips alone produce a region, so its anomalous clips' regions (clip level
    or pooled) cannot be told from normal variation: it is left out of every fit, with a reason
    that says why."""
    settings = params["recommend"]
    settings.update(min_anomaly_clips=6, min_region_share=0.5)
    strong = summary(True, range(38, 44))
    strong["id_level"]["negative_control"] = {"found": True, "p_value": 0.03}
    decision = id_evidence(rows_for("id_00", [40.0] * 8, 2), strong, settings)
    assert decision["evidence"] is None
    assert "negative control" in decision["reason"]
    strong["id_level"]["negative_control"]["found"] = False
    assert id_evidence(rows_for("id_00", [40.0] * 8, 2), strong, settings)["evidence"] == (
        "clip-level"
    )


def test_a_difference_only_in_the_padding_is_found_nowhere(params, tmp_path):
    """DCASE clips are 313 frames padded to 320, and every normal clip holds the same value in
    the padding (variance 0). A change planted only there is no anomaly of the sound: neither
    level may find it (Welch's t over zero-variance cells used to make it 'significant')."""
    from analysis.artifacts import TestFeatures, TrainStats, write_features
    from analysis.localize import localize

    rng = np.random.default_rng(11)
    n, real = 12, 313
    logmel = rng.standard_normal((2 * n, 128, 320)).astype(np.float32)
    logmel[:, :, real:] = 0.0  # the padding: exactly the train mean, 0 after normalization
    label = np.repeat(np.array([0, 1], np.int8), n)
    logmel[label == 1, 40:46, real:] = 3.0  # planted in the padding only
    folder = tmp_path / "features"
    folder.mkdir()
    write_features(
        folder,
        TestFeatures(
            logmel,
            label,
            np.array(["id_00"] * (2 * n)),
            np.array(
                [
                    f"fan/test/{'anomaly' if x else 'normal'}_id_00_{i:08d}.wav"
                    for i, x in enumerate(label)
                ]
            ),
            np.full(2 * n, real, np.int32),
        ),
        TrainStats(np.zeros(128, np.float32), np.ones(128, np.float32), 1, 1),
        [],
        None,
        {},
    )
    out = localize(params, "fan", features_dir=folder, out_dir=tmp_path / "loc")
    ids = read_json(out / "fan.json")["ids"]["id_00"]
    assert not ids["id_level"]["all"]["found"]
    assert ids["n_regions_found"] <= 1  # the clip level's calibrated 2 % false-region rate
    assert ids["n_real_frames"] == real


def test_power_patterns_are_planted_where_they_say():
    from analysis.power import SEGMENT_SECONDS, truth_pattern

    fps = 16000 / 512
    for seed in range(20):
        signed = truth_pattern("short segments", (128, 313), np.random.default_rng(seed), fps)
        rows = np.flatnonzero(signed.any(axis=1))
        assert rows.size == 128 // 21 and np.all(np.diff(rows) == 1)
        frames = signed.any(axis=0)
        edges = np.flatnonzero(np.diff(np.r_[0, frames.astype(int), 0]))
        lengths = edges[1::2] - edges[0::2]
        # Three segments of 0.5-1 s; two may abut and read as one longer run.
        assert frames.sum() == pytest.approx(lengths.sum())
        assert (
            round(SEGMENT_SECONDS[0] * fps) * 3
            <= frames.sum()
            <= round(SEGMENT_SECONDS[1] * fps) * 3
        )
        assert 1 <= lengths.size <= 3
    band = truth_pattern("stationary band", (128, 313), np.random.default_rng(0), fps)
    assert band.any(axis=0).all()  # every real frame, nothing beyond the map's frames
