"""Every file that passes between stages, through its writer and back through its reader.

The values are made here; what comes back must be what went in, with the types the readers
promise (bools, floats, NaN for blanks, user order of presets), whatever the file format does
on the way (sorted JSON keys, CSV text, npz key strings)."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import artifacts as art
from analysis.regions import FEATURE_COLUMNS


def features_row(rng, empty=False) -> dict[str, float]:
    return {c: (np.nan if empty else float(rng.uniform(0, 1))) for c in FEATURE_COLUMNS}


def test_features_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    test = art.TestFeatures(
        rng.standard_normal((3, 8, 10)).astype(np.float32),
        np.array([0, 1, 1], np.int8),
        np.array(["id_00", "id_00", "id_02"]),
        np.array(["fan/test/normal_id_00_00000000.wav", "a b.wav", "ü.wav"]),
        np.array([10, 7, 10], np.int32),
    )
    train = art.TrainStats(
        np.arange(8, dtype=np.float32), np.ones(8, np.float32), count=123, n_clips=4
    )
    truth = tmp_path / "truth.csv"
    truth.write_text(
        "file,kind,f_lo_hz,f_hi_hz,t_start_s,t_end_s,gain_db\na b.wav,tone,1,2,0,1,3\n"
    )
    for source in (truth, None):
        folder = tmp_path / ("with" if source else "without")
        folder.mkdir()
        art.write_features(folder, test, train, [("x.wav", "corrupt")], source, {"n": 1})
        got = art.read_test_features(folder)
        for name in ("logmel", "label", "machine_id", "file", "n_frames"):
            value = getattr(got, name)
            assert (
                np.array_equal(value, getattr(test, name))
                and value.dtype == getattr(test, name).dtype
            )
        assert got.machine_ids() == ["id_00", "id_02"]
        assert got.pick("id_00", 1).tolist() == [False, True, False]
        stats = art.read_train_stats(folder)
        assert (stats.count, stats.n_clips) == (123, 4)
        assert np.array_equal(stats.mean, train.mean) and np.array_equal(stats.std, train.std)
        assert art.read_skipped(folder) == [{"file": "x.wav", "reason": "corrupt"}]
        assert art.read_source(folder) == {"n": 1}
    assert art.read_ground_truth(tmp_path / "with")["a b.wav"][0]["kind"] == "tone"
    assert art.read_ground_truth(tmp_path / "without") == {}


def test_localization_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    regions = rng.random((3, 8, 10)) > 0.5
    arrays = art.LocalizationArrays(
        regions,
        ["a.wav", "b.wav", "c.wav"],
        maps={
            "id_00": {"diff": rng.standard_normal((8, 10)), "excess_freq_profile": np.ones(8)},
            "id_02": {"diff": np.zeros((8, 10))},
        },
        # id_02's halves were not tested (too few clips): only the parts that exist are stored.
        pooled={
            "id_00": {p: rng.random((8, 10)) > 0.5 for p in art.POOLED_PARTS},
            "id_02": {"all": np.zeros((8, 10), bool)},
        },
    )
    rows = [
        {"file": "a.wav", "machine_id": "id_00", "found": 1, **features_row(rng)},
        {"file": "b.wav", "machine_id": "id_00", "found": 0, **features_row(rng, empty=True)},
        {"file": "c.wav", "machine_id": "id_02", "found": 1, "truth_kind": "tone", "iou": 0.25},
    ]
    summary = {
        "ids": {
            "id_00": {
                "id_level": {
                    "all": {
                        "found": True,
                        "p_value": 0.01,
                        "rows": [3, 4],
                        "features": {"n_bands": 1.0},
                    },
                    "fit": {"found": False, "p_value": None, "features": None},
                }
            },
            "id_02": {"status": "not enough evidence: 2 normal test clips"},
        }
    }
    art.write_localization(tmp_path, "fan", arrays, rows, summary)
    got = art.read_localization_arrays(tmp_path, "fan")
    assert np.array_equal(got.regions, regions) and got.region_files == arrays.region_files
    assert np.array_equal(got.region_of("b.wav"), regions[1])
    assert set(got.maps) == {"id_00", "id_02"} and set(got.maps["id_00"]) == {
        "diff",
        "excess_freq_profile",
    }
    assert np.array_equal(got.maps["id_00"]["diff"], arrays.maps["id_00"]["diff"])
    assert set(got.pooled["id_00"]) == set(art.POOLED_PARTS) and set(got.pooled["id_02"]) == {"all"}
    for part in art.POOLED_PARTS:
        assert np.array_equal(got.pooled["id_00"][part], arrays.pooled["id_00"][part])
    back = art.read_region_rows(tmp_path, "fan")
    assert [r["found"] for r in back] == [True, False, True]
    assert back[0]["band_fraction"] == pytest.approx(rows[0]["band_fraction"], rel=1e-5)
    assert np.isnan(back[1]["band_fraction"]) and np.isnan(back[2]["critical_level"])
    assert (
        back[2]["truth_kind"] == "tone" and back[2]["iou"] == 0.25 and back[0]["truth_kind"] == ""
    )
    feats = art.region_feature_arrays(back)
    assert set(feats) == set(FEATURE_COLUMNS) and feats["n_bands"].shape == (3,)
    loaded = art.read_localization_summary(tmp_path, "fan")
    assert loaded == summary
    ids = loaded["ids"]
    assert art.pooled_part(ids["id_00"], "all") == art.PooledPart(
        True, 0.01, {"n_bands": 1.0}, [3, 4]
    )
    assert art.pooled_part(ids["id_00"], "fit") == art.PooledPart(False, None, None, [])
    assert art.pooled_part(ids["id_00"], "holdout") is art.NOT_TESTED
    assert art.pooled_part(ids["id_02"], "all") is art.NOT_TESTED


def test_masks_round_trip_keeps_the_users_preset_order(tmp_path):
    rng = np.random.default_rng(2)
    presets = {"zeta": {"kind": "perlin"}, "alpha__b": {"kind": "audio_specific"}}
    grids = {"q_bot": (4, 5), "q__top": (2, 2)}
    methods = ["any_cell", "nearest"]
    feature_rows = [
        {"preset": p, "mask": i, **features_row(rng, empty=(i == 1))}
        for p in presets
        for i in range(3)
    ]
    samples = {
        p: {"full": rng.integers(0, 2, (2, 8, 10), dtype=np.uint8)}
        | {
            art.sample_key(g, m): rng.integers(0, 2, (2, *s), dtype=np.uint8)
            for g, s in grids.items()
            for m in methods
        }
        for p in presets
    }
    fidelity_rows = [
        {
            "preset": p,
            "grid": g,
            "q_shape": f"{s[0]}x{s[1]}",
            "method": m,
            "vanished_share": 0.5,
            "retained_area_mean": 1.0,
            "iou_mean": 0.75,
            "iou_p10": 0.125,
        }
        for p in presets
        for g, s in grids.items()
        for m in methods
    ]
    measurements = art.MaskMeasurements(
        meta={
            "presets": presets,
            "preset_order": list(presets),
            "grids": {g: list(s) for g, s in grids.items()},
            "resize_methods": methods,
            "spectrogram_shape": [8, 10],
        },
        feature_rows=feature_rows,
        grid_rows={g: feature_rows for g in grids},
        fidelity_rows=fidelity_rows,
        samples=samples,
        per_mask={("zeta", "q_bot", "any_cell", "iou"): np.ones(3)},
        summary={"zeta": {"empty_share": 0.0}},
    )
    art.write_masks(tmp_path, measurements)
    meta = art.read_masks_meta(tmp_path)
    assert list(meta["presets"]) == ["zeta", "alpha__b"]  # not the JSON file's sorted order
    assert meta["grids"] == grids and meta["resize_methods"] == methods
    back = art.read_mask_samples(tmp_path)
    assert list(back) == list(presets)
    for p in presets:
        assert set(back[p]) == set(samples[p])
        for key, value in samples[p].items():
            assert np.array_equal(back[p][key], value)
    rows = art.read_mask_rows(tmp_path)
    assert [(r["preset"], r["mask"]) for r in rows] == [
        (r["preset"], r["mask"]) for r in feature_rows
    ]
    assert np.isnan(rows[1]["area_fraction"]) and not np.isnan(rows[0]["area_fraction"])
    feats = art.read_mask_features(tmp_path, list(presets), grid="q__top")
    assert feats["alpha__b"]["band_fraction"] == pytest.approx(
        [r["band_fraction"] for r in feature_rows[3:]], rel=1e-5, nan_ok=True
    )
    fidelity = art.read_fidelity(tmp_path)
    assert fidelity[0] == {**fidelity_rows[0]} and isinstance(fidelity[0]["iou_mean"], float)


def test_power_recommendations_and_manifest_round_trip(tmp_path):
    rows = [{"machine_type": "fan", "pattern": "stationary band", "delta": 0.5, "n_ids": 2}]
    record = {"deltas": [0.5], "types": {"fan": {"status": "ok"}}}
    art.write_power(tmp_path, rows, record)
    assert art.read_power(tmp_path) == {**record, "rows": rows}
    assert (tmp_path / "power.csv").read_text().splitlines()[0].split(",") == list(
        art.POWER_COLUMNS
    )

    fitted = {"min_bands": 1, "max_bands": 2, "full_time_prob": 0.5}
    switch = art.VerdictRecord(
        art.Verdict.SWITCH, "fitted", "current", -0.2, -0.3, -0.1, 0.95, 0.9, 10, 12, "closer"
    )
    lacking = art.VerdictRecord(
        art.Verdict.NOT_ENOUGH_EVIDENCE, None, "current", None, None, None, None, None, 0, 0, "x"
    )
    rec_rows = [
        {"machine_type": "fan", "machine_id": "all", "status": "ok", "fitted": fitted, **fitted},
        {"machine_type": "fan", "machine_id": "id_00", "status": "ok", "fitted": fitted},
        {"machine_type": "pump", "machine_id": "all", "status": "not enough evidence: none"},
    ]
    for row, verdict in zip(rec_rows, (switch, switch, lacking), strict=True):
        row["verdict"] = verdict.to_json()
    scores = [{"machine_type": "fan", "candidate": "noise_level", "score": -0.0123}]
    art.write_recommendations(
        tmp_path,
        rec_rows,
        ["machine_type", "machine_id", "status", "verdict", "verdict_candidate"],
        {"presets": {}},
        {"m": 1},
        scores,
    )
    assert (tmp_path / "scores.csv").read_text() == (
        "machine_type,candidate,score\nfan,noise_level,-0.0123\n"
    )
    csv_lines = (tmp_path / "recommendations.csv").read_text().splitlines()
    assert csv_lines[1] == "fan,all,ok,switch,fitted"
    assert csv_lines[3] == "pump,all,not enough evidence: none,not_enough_evidence,"
    recs = art.read_recommendations(tmp_path / "recommendations.json")
    assert recs["rows"] == rec_rows
    # The verdict comes back typed, field for field; what to train with follows from it.
    assert art.row_verdict(recs["rows"][0]) == switch
    assert switch.recommended == "fitted" and lacking.recommended == "current"
    assert [r["machine_type"] for r in art.type_rows(recs)] == ["fan", "pump"]
    assert art.fitted_settings(recs) == {"fan": art.MaskSetting("audio_specific", fitted)}
    assert art.fitted_settings(recs)["fan"].to_json() == {"kind": "audio_specific", **fitted}
    assert [art.is_ok(r) for r in rec_rows] == [True, True, False]
    assert art.read_recommendations(tmp_path / "metrics.json") == {"m": 1}

    entries = [{"id": "fig-a", "file": "a.png", "caption": "A", "section": "s"}]
    art.write_manifest(tmp_path, entries)
    assert art.read_manifest(tmp_path) == entries
