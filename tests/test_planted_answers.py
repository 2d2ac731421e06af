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
