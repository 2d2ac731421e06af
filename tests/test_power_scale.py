"""The power stage at scale: the per-ID cap on normal clips, per-ID pooling, check-params."""

from __future__ import annotations

import copy
import json
import zlib

import numpy as np
import pytest

from analysis.io import save_npz
from analysis.localization.clip_level import calibrate_clip_level
from analysis.params import ParamsError, validate_params
from analysis.power import (
    PATTERNS,
    capped_indices,
    id_reference,
    power_stage,
    spike_one_id,
    truth_pattern,
)

N_MELS, FRAMES = 64, 40


def write_type(folder, ids: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """A ``test.npz`` of noise clips (n normal clips per ID, 4 anomalous); returns each ID's
    normal clips in file order."""
    rng = np.random.default_rng(seed)
    logmel, label, machine_id, files, normal_by_id = [], [], [], [], {}
    for mid, n_normal in ids.items():
        clips = rng.standard_normal((n_normal + 4, N_MELS, FRAMES)).astype(np.float32)
        normal_by_id[mid] = clips[:n_normal].astype(np.float64)
        logmel.append(clips)
        label += [0] * n_normal + [1] * 4
        machine_id += [mid] * (n_normal + 4)
        files += [
            f"test/{'normal' if i < n_normal else 'anomaly'}_{mid}_{i:08d}.wav"
            for i in range(n_normal + 4)
        ]
    folder.mkdir(parents=True)
    save_npz(
        folder / "test.npz",
        compress=False,
        logmel=np.concatenate(logmel),
        label=np.array(label, dtype=np.int8),
        machine_id=np.array(machine_id),
        file=np.array(files),
        n_frames=np.full(len(files), FRAMES, dtype=np.int32),
    )
    return normal_by_id


def small_params(params: dict, types: list[str], cap: int, n_jobs: int) -> dict:
    out = copy.deepcopy(params)
    out["data"]["machine_types"] = types
    out["features"]["n_mels"], out["features"]["target_T"] = N_MELS, FRAMES
    out["localization"].update(n_permutations=19, id_level_alpha=0.2, min_region_cells=6)
    out["localization"]["merge_gap_frames"] = 4
    out["power"].update(max_normal_clips_per_id=cap, n_jobs=n_jobs, deltas=[1.0, 8.0])
    return out


@pytest.mark.parametrize("n,cap", [(5, 200), (200, 200), (201, 200), (800, 200), (9, 2)])
def test_capped_indices_are_all_or_evenly_spaced_and_distinct(n, cap):
    picked = capped_indices(n, cap)
    assert picked.size == min(n, cap)
    assert np.all(np.diff(picked) > 0) and picked[0] == 0
    if n > cap:
        assert picked[-1] == n - 1  # the whole file order is sampled, not its start
        steps = np.diff(picked)  # even: each step the floor or the ceiling of (n-1)/(cap-1)
        assert set(steps) <= {int(np.floor((n - 1) / (cap - 1))), int(np.ceil((n - 1) / (cap - 1)))}


@pytest.fixture
def two_types(tmp_path):
    """fan with one capped ID (30 normal clips), one under the cap (12) and one too small to
    split (5); pump with two IDs of 14."""
    build = tmp_path / "build"
    normal = {
        "fan": write_type(build / "features/fan", {"id_00": 30, "id_02": 12, "id_04": 5}, 1),
        "pump": write_type(build / "features/pump", {"id_00": 14, "id_02": 14}, 2),
    }
    return build, normal


def test_power_respects_the_cap_and_pooling_matches_serial(two_types, params):
    build, normal = two_types
    cap = 16
    outputs = {}
    for n_jobs in (1, 2):
        p = small_params(params, ["fan", "pump"], cap, n_jobs)
        power_stage(p, build)
        outputs[n_jobs] = ((build / "power.csv").read_bytes(), (build / "power.json").read_bytes())
    assert outputs[1] == outputs[2]  # per-ID pool tasks: the same bytes as one process
    record = json.loads(outputs[1][1])
    assert list(record["types"]) == ["fan", "pump"]
    assert record["max_normal_clips_per_id"] == cap
    assert record["types"]["fan"]["n_ids_capped"] == 1  # id_00 only (30 > 16)
    assert record["types"]["pump"]["n_ids_capped"] == 0
    assert record["n_ids_capped"] == 1
    csv_rows = (build / "power.csv").read_text().splitlines()
    header = csv_rows[0].split(",")
    fan = [
        dict(zip(header, r.split(","), strict=True)) for r in csv_rows[1:] if r.startswith("fan")
    ]
    # Spiked halves: id_00 capped to 16 -> 8; id_02 12 -> 6; id_04 (5 < 2 x 4) left out.
    assert {int(r["n_spiked"]) for r in fan} == {8 + 6}
    assert {int(r["n_ids"]) for r in fan} == {2}

    # The serial computation on the same clips, by hand: the capped clips, the calibration
    # pooled over the type's reference halves, each ID spiked in turn.
    p = small_params(params, ["fan"], cap, 1)
    loc = p["localization"]
    used = {
        "id_00": normal["fan"]["id_00"][capped_indices(30, cap)],
        "id_02": normal["fan"]["id_02"],
    }
    refs = {mid: id_reference(x, loc, p["power"]["seed"]) for mid, x in used.items()}
    calibration = calibrate_clip_level({m: r.normal for m, r in refs.items()}, loc)
    levels = (calibration.threshold, calibration.cell_level, calibration.profile_levels)
    false_rate = float(np.concatenate(list(calibration.flagged.values())).mean())
    for p_index, pattern in enumerate(PATTERNS):
        for delta in p["power"]["deltas"]:
            hits = []
            for mid, ref in refs.items():
                rng = np.random.default_rng([p["power"]["seed"], zlib.crc32(mid.encode()), p_index])
                signed = truth_pattern(pattern, (N_MELS, FRAMES), rng, 31.25)
                hits += spike_one_id(ref, signed, delta, loc, levels, p["power"]["seed"])[0]
            row = next(r for r in fan if r["pattern"] == pattern and float(r["delta"]) == delta)
            assert float(row["clip_recall"]) == pytest.approx(np.mean(hits))
            assert float(row["clip_false_region_rate"]) == pytest.approx(false_rate)


def test_a_type_without_a_splittable_id_is_said_not_measured(tmp_path, params):
    build = tmp_path / "build"
    write_type(build / "features/valve", {"id_00": 5, "id_02": 7}, 3)
    power_stage(small_params(params, ["valve"], 200, 1), build)
    record = json.loads((build / "power.json").read_text())
    assert record["types"]["valve"]["status"].startswith("not measured: fewer than 8 normal")
    assert (build / "power.csv").read_text().count("\n") == 1  # the header only


def test_check_params_names_the_cap(params):
    raw = copy.deepcopy(params)
    raw["power"]["max_normal_clips_per_id"] = 7  # below 2 x min_normal_clips (4)
    with pytest.raises(ParamsError, match="power.max_normal_clips_per_id"):
        validate_params(raw)
    raw["power"]["max_normal_clips_per_id"] = "many"
    with pytest.raises(ParamsError, match="power.max_normal_clips_per_id"):
        validate_params(raw)
    raw["power"]["max_normal_clips_per_id"] = 8
    assert validate_params(raw)["power"]["max_normal_clips_per_id"] == 8
