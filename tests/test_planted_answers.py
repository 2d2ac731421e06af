"""What the reader is told, on planted data whose answer is known: per machine ID the shape that
was planted (a full-clip narrow band, short segments in a band, nothing), at a strong and at a
realistic strength, described per ID and never as a median over IDs."""

from __future__ import annotations

import re

import numpy as np
import pytest

from analysis.artifacts import TestFeatures, TrainStats, write_features
from analysis.io import read_json
from analysis.localize import localize
from analysis.mel import MelGeometry
from analysis.report_text import type_description

GEOMETRY = MelGeometry()
REAL = 313  # frames of a 10 s clip; padded to 320
BAND_HZ = {"id_00": 1200.0, "id_02": 3200.0}


def planted_features(folder, delta: float, n: int, seed: int = 0):
    """Three IDs of normalized log-mels: id_00 a full-clip band of 5 bins at 1.2 kHz, id_02 a
    band of 5 bins at 3.2 kHz in three 0.5-1 s segments (at other places in every clip),
    id_04 nothing. ``delta`` in units of the cell SD."""
    rng = np.random.default_rng(seed)
    logmel, labels, ids, files = [], [], [], []
    for mid in ("id_00", "id_02", "id_04"):
        for label in (0, 1):
            for i in range(n):
                x = rng.standard_normal((128, 320)).astype(np.float32)
                x[:, REAL:] = 0
                if label and mid in BAND_HZ:
                    b = int(round(GEOMETRY.hz_to_bin(BAND_HZ[mid])))
                    rows = slice(b - 2, b + 3)
                    if mid == "id_00":
                        x[rows, :REAL] += delta
                    else:
                        starts = np.sort(rng.choice(np.arange(0, REAL - 40, 60), 3, replace=False))
                        for start in starts + rng.integers(0, 20, 3):
                            x[rows, start : start + rng.integers(16, 32)] += delta
                logmel.append(x)
                labels.append(label)
                ids.append(mid)
                files.append(f"fan/test/{'anomaly' if label else 'normal'}_{mid}_{i:08d}.wav")
    folder.mkdir(parents=True)
    write_features(
        folder,
        TestFeatures(
            np.stack(logmel),
            np.array(labels, np.int8),
            np.array(ids),
            np.array(files),
            np.full(len(files), REAL, np.int32),
        ),
        TrainStats(np.zeros(128, np.float32), np.ones(128, np.float32), 1, 1),
        [],
        None,
        {},
    )
    return folder


@pytest.mark.parametrize(
    "strength, n, level",
    [
        (3.0, 12, "clip"),
        (0.6, 40, "pooled"),
    ],  # strong: every clip shows it; realistic: only the mean
    ids=["strong", "realistic"],
)
def test_each_id_is_described_by_what_was_planted_in_it(params, tmp_path, strength, n, level):
    features = planted_features(tmp_path / "features", strength, n)
    out = localize(params, "fan", features_dir=features, out_dir=tmp_path / "loc")
    summary = read_json(out / "fan.json")
    text = type_description("fan", summary, GEOMETRY.seconds_per_frame, GEOMETRY.target_T)
    parts = text.removeprefix("fan: ").removesuffix(".").split("; ")
    full = next(p for p in parts if "id_00" in p)
    segments = next(p for p in parts if "id_02" in p)
    assert "nothing found in id_04" in parts, text
    assert "narrow band over the whole clip" in full, text
    assert re.search(r"id_00 near 1\.[1-3]", full) and re.search(r"id_02 near 3\.[0-4]", segments)
    assert full != segments and "whole clip" not in segments  # named apart, never a median
    if level == "clip":
        # Every clip shows its own three segments of 0.5-1 s.
        assert re.search(r"narrow band in 3 segments of about (0\.[5-9]|1\.0) s", segments), text
        assert "pooled" not in text
    else:
        # Only the mean shows them; at other places in every clip they spread over the pooled
        # map, and the words say the evidence is pooled.
        assert "(pooled over clips)" in full and "(pooled over clips)" in segments, text


def planted_region_rows(rng, n: int, kind: str) -> list[dict]:
    """Region rows as localize writes them, for planted regions: ``full`` a 6-8 row band at
    bin 40 over the clip's 313 real frames; ``segments`` a 5-row band at bin 90 in three
    segments of 16-31 frames."""
    from analysis.artifacts import parse_region_row
    from analysis.regions import FEATURE_COLUMNS, region_features

    rows = []
    for i in range(n):
        region = np.zeros((128, 320), bool)
        if kind == "full":
            low = 40 - int(rng.integers(3, 5))
            region[low : low + int(rng.integers(6, 9)), :REAL] = True
        else:
            for start in (20, 130, 240):
                region[88:93, start : start + int(rng.integers(16, 32))] = True
        feats = region_features(region)
        row = {
            "file": f"fan/test/anomaly_id_00_{kind}{i:06d}.wav",
            "machine_id": "id_00",
            "found": "1",
        }
        row.update({c: str(float(feats[c][0])) for c in FEATURE_COLUMNS})
        rows.append(parse_region_row(row))
    return rows


def test_a_planted_full_clip_band_is_fitted_as_one_and_described_by_its_masks(params):
    """The fit's parameters mean what its masks show: a full-clip band is the full-clip mode
    with the coverage the regions have (not many overlapping segments tiling the clip), one
    band, at the planted bins; its description is in Hz and seconds."""
    from analysis.fit import strategy_features
    from analysis.recommend import recommend_group
    from analysis.report_text import describe_fit

    rows = planted_region_rows(np.random.default_rng(0), 24, "full")
    presets = {"current": strategy_features({}, GEOMETRY, 256, seed=0)}
    row = recommend_group("fan", "id_00", rows, {}, presets, GEOMETRY, params["recommend"])
    assert row["status"] == "ok"
    assert row["full_time_prob"] == 1.0 and row["min_segments"] == row["max_segments"] == 1
    assert row["min_bands"] == row["max_bands"] == 1
    assert 0.93 <= row["min_full_coverage"] <= 0.98 <= row["max_full_coverage"] <= 1.0
    # Bands may occupy rows floor(min * n_mels) .. ceil(max * n_mels) - 1: the planted 36..44.
    assert (
        np.floor(row["min_band_position"] * 128) <= 37
        and np.ceil(row["max_band_position"] * 128) >= 43
    )
    assert row["min_band_position"] >= 30 / 128 and row["max_band_position"] <= 50 / 128
    drawn = row["drawn"]
    assert drawn["full_clip_share"] == 1.0
    assert drawn["band_rows"][0] >= 4 and drawn["band_rows"][1] <= 10
    centre_hz = GEOMETRY.bin_to_hz(40)
    assert (
        drawn["band_centre_hz"][0] <= centre_hz * 1.1
        and drawn["band_centre_hz"][1] >= centre_hz * 0.9
    )
    words = describe_fit(row, 320)
    assert "1 band of" in words and "in every mask" in words and "kHz" in words, words
    from analysis.recommend import finalize_verdicts
    from analysis.report_text import verdict_label

    finalize_verdicts([row], params["recommend"])
    assert verdict_label(row) == "switch to fitted"  # far closer than 'current'


def test_planted_short_segments_are_fitted_as_segments(params):
    from analysis.fit import strategy_features
    from analysis.recommend import recommend_group

    rows = planted_region_rows(np.random.default_rng(1), 24, "segments")
    presets = {"current": strategy_features({}, GEOMETRY, 256, seed=0)}
    row = recommend_group("fan", "id_00", rows, {}, presets, GEOMETRY, params["recommend"])
    drawn = row["drawn"]
    assert drawn["full_clip_share"] <= 0.05 and row["max_bands"] == 1
    seconds = [16 * GEOMETRY.seconds_per_frame, 31 * GEOMETRY.seconds_per_frame]
    assert (
        drawn["segment_seconds"][0] >= 0.5 * seconds[0]
        and drawn["segment_seconds"][1] <= 2 * seconds[1]
    )
    assert drawn["segments_per_mask"][0] >= 2 and drawn["segments_per_mask"][1] <= 4


def test_canonical_settings_say_what_the_masks_show():
    """Many overlapping segments that tile the clip are the full-clip mode; bands that always
    merge into one are one band (the two cases the issue found in fitted rows)."""
    from analysis.fit import FIT_KEYS, canonical_setting

    base = {
        k: v
        for k, v in {
            "min_band_fraction": 0.05,
            "max_band_fraction": 0.06,
            "min_bands": 1,
            "max_bands": 1,
            "full_time_prob": 0.0,
            "min_full_coverage": 0.85,
            "max_full_coverage": 1.0,
            "min_segments": 85,
            "max_segments": 119,
            "min_seg_len": 54,
            "max_seg_len": 320,
            "min_band_position": 0.3,
            "max_band_position": 0.4,
        }.items()
    }
    assert set(base) == set(FIT_KEYS)
    tiling = canonical_setting(base, GEOMETRY, 1000, seed=0)
    assert tiling["full_time_prob"] == 1.0
    assert (tiling["min_segments"], tiling["max_segments"]) == (1, 1)
    assert tiling["min_full_coverage"] >= 0.9 and tiling["max_full_coverage"] == 1.0
    merged = {
        **base,
        "min_segments": 2,
        "max_segments": 3,
        "min_seg_len": 10,
        "max_seg_len": 20,
        "min_bands": 2,
        "max_bands": 5,
        "min_band_position": 0.3,
        "max_band_position": 0.34,
    }
    plain = canonical_setting(merged, GEOMETRY, 1000, seed=0)
    assert (plain["min_bands"], plain["max_bands"]) == (1, 1)
    assert (plain["min_segments"], plain["max_segments"]) == (2, 3)  # segments kept: they vary
    kept = canonical_setting(
        {**merged, "min_band_position": 0.0, "max_band_position": 1.0}, GEOMETRY, 1000, 0
    )
    assert kept["max_bands"] == 5  # bands that really are apart stay


def test_a_type_of_two_differently_shaped_ids_is_recommended_as_their_mixture(params):
    """id_00 shows a full-clip band, id_02 short segments: one setting for both cannot be
    either; the mixture of their own settings is closer on the held-out half, with its paired
    interval below 0, and it is the recommended form."""
    from analysis.fit import strategy_features
    from analysis.recommend import recommend_group

    rng = np.random.default_rng(0)
    full = planted_region_rows(rng, 24, "full")
    segments = planted_region_rows(rng, 24, "segments")
    for r in segments:
        r["machine_id"], r["file"] = "id_02", r["file"].replace("id_00", "id_02")
    presets = {"current": strategy_features({}, GEOMETRY, 256, seed=0)}
    row = recommend_group("fan", "all", full + segments, {}, presets, GEOMETRY, params["recommend"])
    assert row["form"] == "mixture" and row["mixture_left_out"] == []
    components = {c["machine_id"]: c for c in row["mixture"]}
    assert components["id_00"]["weight"] == components["id_02"]["weight"] == 0.5
    assert components["id_00"]["fitted"]["full_time_prob"] == 1.0
    assert components["id_02"]["fitted"]["full_time_prob"] == 0.0
    assert row["diff_mixture_vs_single_verdict"] == "closer"
    assert row["diff_mixture_vs_single_ci_high"] < 0
    assert row["score_recommended"] == row["score_mixture"] < row["score_single"]
    assert 0.4 <= row["drawn"]["full_clip_share"] <= 0.6  # half the masks, as half the IDs
