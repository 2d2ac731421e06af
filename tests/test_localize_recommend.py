import copy

import numpy as np
import pytest

from analysis.artifacts import parse_region_row
from analysis.fit import FIT_KEYS, fit_preset, strategy_features
from analysis.io import read_csv, read_json
from analysis.localization.clip_level import (
    calibrated_threshold,
    delineation_level,
    detect_regions,
    out_of_fold_levels,
)
from analysis.localization.maps import iou, localization_maps
from analysis.masks import AudioSpecificStrategy
from analysis.mel import MelGeometry
from analysis.recommend import recommend_group
from analysis.regions import FEATURE_COLUMNS, profile_features
from analysis.scoring import score

GEOMETRY = MelGeometry()


def clips_with_stripe(n_normal=10, n_anomaly=6, rows=slice(40, 44), seed=0):
    rng = np.random.default_rng(seed)
    normal = rng.normal(size=(n_normal, 128, 320))
    anomaly = rng.normal(size=(n_anomaly, 128, 320))
    anomaly[:, rows, :] += 3.0
    truth = np.zeros((128, 320), bool)
    truth[rows, :] = True
    return normal, anomaly, truth


def test_excess_removes_normal_variability():
    normal, anomaly, truth = clips_with_stripe()
    maps = localization_maps(normal, anomaly)
    assert abs(maps["excess"][~truth].mean()) < 0.05  # pure noise: no excess
    assert maps["excess"][truth].mean() > 1.5
    assert 40 <= np.argmax(maps["excess_freq_profile"]) <= 43


def calibrated(normal, loc):
    levels, _, cells, _ = out_of_fold_levels(normal, loc)
    return calibrated_threshold(levels, loc["clip_false_region_rate"]), delineation_level(
        cells, loc
    )


def test_regions_find_an_injected_stripe(params):
    loc = params["localization"]
    normal, anomaly, truth = clips_with_stripe()
    threshold, cell_level = calibrated(normal, loc)
    regions, levels = detect_regions(normal, anomaly, threshold, loc, cell_level)
    assert threshold > 0 and np.all(levels > threshold)
    assert all(iou(r, truth) > 0.6 for r in regions)


def test_no_region_when_anomalies_look_normal(params):
    loc = params["localization"]
    rng = np.random.default_rng(1)
    normal = rng.normal(size=(20, 128, 320))
    threshold, cell_level = calibrated(normal, loc)
    regions, levels = detect_regions(
        normal, rng.normal(size=(10, 128, 320)), threshold, loc, cell_level
    )
    assert regions.sum() < 0.001 * regions.size


def test_score_is_zero_for_identical_and_grows_with_difference():
    clicks = {
        "min_band_fraction": 0.05,
        "max_band_fraction": 0.1,
        "min_segments": 2,
        "max_segments": 4,
        "min_seg_len": 3,
        "max_seg_len": 8,
    }
    a = strategy_features(clicks, GEOMETRY, 500, seed=1)
    b = strategy_features(clicks, GEOMETRY, 500, seed=1)
    c = strategy_features(
        {
            "min_band_fraction": 0.3,
            "max_band_fraction": 0.5,
            "min_segments": 1,
            "max_segments": 1,
            "min_seg_len": 300,
            "max_seg_len": 320,
        },
        GEOMETRY,
        500,
        seed=1,
    )
    # The same 500 masks on both sides: 2 E|X-Y| over all pairs includes the 500 zero
    # self-pairs, so the unbiased score is -2 E|X-X'| / 500, a hair below 0.
    assert -0.01 < score(a, b, 128, 320) <= 0.0
    assert score(a, c, 128, 320) > 0.2


def test_closed_loop_fit_recovers_known_parameters():
    truth = {
        "min_band_fraction": 0.05,
        "max_band_fraction": 0.1,
        "min_segments": 2,
        "max_segments": 4,
        "min_seg_len": 20,
        "max_seg_len": 40,
        "min_band_position": 0.2,
        "max_band_position": 0.6,
    }
    rows, frames = AudioSpecificStrategy(
        GEOMETRY.spectrogram_shape, GEOMETRY.spectrogram_shape, seed=11, **truth
    ).draw_factors(300)
    real = profile_features(rows, frames)
    fitted, fit_score = fit_preset(
        real,
        GEOMETRY,
        {"n_masks_per_candidate": 256, "n_search_candidates": 80, "n_refine_rounds": 3},
        seed=3,
    )
    assert fit_score < 0.03
    for lo, hi, slack in (
        ("min_band_fraction", "max_band_fraction", 0.02),
        ("min_segments", "max_segments", 1),
        ("min_seg_len", "max_seg_len", 6),
        ("min_band_position", "max_band_position", 0.06),
    ):
        true_mid = (truth[lo] + truth[hi]) / 2
        # The fitted range contains the true parameters' middle and is close to the true ends.
        assert fitted[lo] <= true_mid <= fitted[hi], (lo, fitted)
        assert abs(fitted[lo] - truth[lo]) <= slack + 0.5 * (truth[hi] - truth[lo]), (lo, fitted)
        assert abs(fitted[hi] - truth[hi]) <= slack + 0.5 * (truth[hi] - truth[lo]), (hi, fitted)


@pytest.mark.parametrize(
    "truth, checks",
    [
        (  # mostly full-clip stripes, sometimes two short pieces
            {
                "min_band_fraction": 0.03,
                "max_band_fraction": 0.06,
                "full_time_prob": 0.8,
                "min_segments": 1,
                "max_segments": 2,
                "min_seg_len": 10,
                "max_seg_len": 30,
            },
            {"full_time_prob": (0.65, 0.95), "max_bands": (1, 1)},
        ),
        (  # several thin lines at once over the whole clip (ToyConveyor-like)
            {
                "min_band_rows": 2,
                "max_band_rows": 3,
                "min_bands": 3,
                "max_bands": 3,
                "full_time_prob": 1.0,
                "min_band_position": 0.2,
                "max_band_position": 0.8,
            },
            {"full_time_prob": (0.85, 1.0), "min_bands": (2, 3), "max_bands": (3, 4)},
        ),
    ],
    ids=["full-clip share", "several bands"],
)
def test_closed_loop_fit_chooses_full_clip_and_multi_band_masks(truth, checks):
    """Regions drawn from known settings of the richer family are fitted back into it."""
    rows, frames = AudioSpecificStrategy(GEOMETRY.spectrogram_shape, seed=12, **truth).draw_factors(
        300
    )
    real = profile_features(rows, frames)
    fitted, fit_score = fit_preset(
        real,
        GEOMETRY,
        {"n_masks_per_candidate": 256, "n_search_candidates": 80, "n_refine_rounds": 3},
        seed=4,
    )
    assert fit_score < 0.04, fitted
    for key, (lo, hi) in checks.items():
        assert lo <= fitted[key] <= hi, (key, fitted)


def fake_rows(n_found, n_missing, machine_id="id_00"):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n_found + n_missing):
        found = i < n_found
        row = {
            "file": f"x/test/anomaly_{machine_id}_{i:08d}.wav",
            "machine_id": machine_id,
            "found": "1" if found else "0",
        }
        row.update({c: (str(rng.uniform(0.1, 0.9)) if found else "") for c in FEATURE_COLUMNS})
        rows.append(parse_region_row(row))
    return rows


@pytest.mark.parametrize("n_found, n_missing", [(0, 0), (1, 0), (0, 5), (3, 5)])
def test_thin_data_gives_a_stated_not_enough_evidence_row(params, n_found, n_missing):
    presets = {"current": strategy_features({}, GEOMETRY, 64, seed=0)}
    row = recommend_group(
        "fan", "id_00", fake_rows(n_found, n_missing), {}, presets, GEOMETRY, params["recommend"]
    )
    assert row["status"].startswith("not enough evidence")
    assert "score_recommended" not in row and all(k not in row for k in FIT_KEYS)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, default_params):
    """The synthetic default at demonstration strength (synthetic.strength 30) through extract,
    localize, masks and recommend (about a minute). At the realistic default strength most
    anomalies are below one clip's noise; what the clip level can then still find is measured
    by the power benchmark, not asserted here."""
    from analysis.extract import extract
    from analysis.localize import localize
    from analysis.masks import masks_stage
    from analysis.recommend import recommend
    from analysis.synthesize import synthesize

    params = copy.deepcopy(default_params)
    # 30: the calibrated typical gains (0.45-2.55 dB) times 30 put every type but ToyCar at the
    # 24 dB cap and ToyCar near 13.5 dB, about the demonstration gains strength 8 gave before.
    params["synthetic"]["strength"] = 30.0
    work = tmp_path_factory.mktemp("default")
    synthesize(params, work / "data")
    for machine_type in params["data"]["machine_types"]:
        extract(
            params,
            machine_type,
            data_root=work / "data",
            out_dir=work / "build" / "features" / machine_type,
        )
        localize(
            params,
            machine_type,
            features_dir=work / "build" / "features" / machine_type,
            out_dir=work / "build" / "localization",
        )
    masks_stage(params, work / "build" / "masks")
    recommend(params, work / "build")
    return params, work / "build"


# Asserted localization quality at demonstration strength, per machine type: mean IoU with the
# injected regions and median band-centre error (mel bins). Stationary single-band anomalies
# (fan, pump, slider's band IDs) and valve clicks measure IoU 0.57-0.70 with centre errors of
# 0-3 bins; the floors sit about 0.1 below. The toy machines are lower by construction: ToyCar's
# broad band is injected at 3-8 dB (its realistic gain is 0.7 dB) and is found only in part,
# and ToyConveyor's anomalies are 2-4 thin lines spread over the spectrum, so a region that
# misses one line has its cell-weighted centre tens of bins from the centre of all lines.
# ToyCar also varies most between data sets: over synthetic seeds 2020, 1, 2 and 3 (with this
# generator and the one before it) it found 47-95 % of its clips with mean IoU 0.09-0.29, so
# its floors sit below that range rather than at one lucky seed's values.
LOCALIZATION_FLOOR = {  # (mean IoU, median centre error in bins, share of clips found)
    "fan": (0.55, 2.0, 0.75),
    # Generator 4 gives pump's and valve's normal clips recording conditions (factory noise of
    # changing level, knocks, an interference band in about a tenth of them), as real normal
    # clips have: the clip-level threshold, calibrated so that 2 % of normal clips hold a region,
    # rises above many anomalies, most for valve, whose normal knocks look like its rattles.
    # Measured at strength 30, seed 2020: pump IoU 0.43, centre error 4.6 bins, 83 % found;
    # valve 0.19, 1.5 bins, 58 % found (generator 3: both above 0.5 IoU and 75 % found).
    "pump": (0.35, 5.0, 0.75),
    # slider's band change follows the slide's motion since the calibration: in the motion's
    # quiet phases (amplitude 0.1 of the peak) it is about 20 dB weaker, yet its ground truth is
    # the whole clip, so IoU dropped and band centres moved (measured 0.51 and 3.9 bins at
    # strength 30): the floors sit below / above that.
    "slider": (0.45, 5.0, 0.75),
    "valve": (0.12, 3.0, 0.45),
    "ToyCar": (0.08, 15.0, 0.4),
    "ToyConveyor": (0.2, 50.0, 0.75),
}


@pytest.mark.slow
@pytest.mark.parametrize("machine_type", list(LOCALIZATION_FLOOR))
def test_localization_matches_ground_truth(default_run, machine_type):
    _, build = default_run
    rows = read_csv(build / "localization" / f"{machine_type}.regions.csv")
    min_iou, max_centre_error, min_found = LOCALIZATION_FLOOR[machine_type]
    assert np.mean([float(r["iou"]) for r in rows]) >= min_iou
    errors = [float(r["centre_error_bins"]) for r in rows if r["found"] == "1"]
    assert np.median(errors) <= max_centre_error
    assert sum(r["found"] == "1" for r in rows) >= min_found * len(rows)


@pytest.mark.slow
def test_extract_reads_the_synthetic_default_with_nothing_skipped(default_run):
    params, build = default_run
    for machine_type in params["data"]["machine_types"]:
        assert read_csv(build / "features" / machine_type / "skipped.csv") == []
        source = read_json(build / "features" / machine_type / "source.json")
        assert source["synthetic"] and source["n_skipped"] == 0 and not source["warnings"]


@pytest.mark.slow
def test_fitted_setting_claims_rest_on_paired_intervals(default_run):
    """At demonstration strength the regions are clear and the fit searches the family they
    come from, so where a paired interval exists the fitted setting is never farther than the
    closest preset, and it is closer (interval excluding 0) for most machine types."""
    import json

    _, build = default_run
    recs = json.loads((build / "recommendations.json").read_text())["rows"]
    rows = [r for r in recs if r["machine_id"] == "all"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) >= 4
    with_ci = [r for r in ok if r["intervals"]]
    assert all(r["diff_fitted_vs_best_verdict"] != "farther" for r in with_ci)
    closer = [r for r in with_ci if r["diff_fitted_vs_best_verdict"] == "closer"]
    assert len(closer) >= len(ok) / 2
    assert all(r["diff_fitted_vs_best_ci_high"] < 0 for r in closer)
    from analysis.artifacts import Verdict, row_verdict

    # Rule 1 on every type row: a switch rests on its corrected interval and its stability.
    for r in rows:
        v = row_verdict(r)
        if v.kind is Verdict.SWITCH:
            assert v.ci_high < 0 and v.stability_share >= 0.8, v
        elif v.kind is Verdict.KEEP:
            assert v.ci_high >= 0 and v.n_independent_holdout >= 5, v
    metrics = read_json(build / "metrics.json")
    assert set(metrics) == {r["machine_type"] for r in ok}
