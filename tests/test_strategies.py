"""The strategy seam: the family's options, the training code's call convention, imported
strategies, the per-machine wrapper, and the per-item fast path."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from scipy.stats import chisquare, ks_2samp

from analysis.regions import region_features
from analysis.strategies import (
    AudioSpecificStrategy,
    MachineSpecificStrategy,
    StrategyError,
    TrainingAudioStrategy,
    build_strategy,
)

SPEC = (128, 320)
N_MELS, T = SPEC

FAMILY_CASES = {
    "seed defaults": {},
    "several bands, full clip often": {"min_bands": 2, "max_bands": 4, "full_time_prob": 0.6},
    "bands in Hz": {"min_band_hz": 40.0, "max_band_hz": 2000.0, "min_band_position": 0.2},
    "disjoint, crowded": {
        "disjoint_segments": True,
        "min_segments": 3,
        "max_segments": 12,
        "min_seg_len": 20,
        "max_seg_len": 60,
    },
    "rows, narrow position": {
        "min_band_rows": 1,
        "max_band_rows": 9,
        "min_band_position": 0.9,
        "max_band_position": 1.0,
    },
}


def make(case: dict, **kwargs):
    case = dict(case)
    cls = case.pop("cls", AudioSpecificStrategy)
    return cls(SPEC, **case, **kwargs)


def runs_as_sets(low, width, start, length):
    bands = {(int(a), int(w)) for a, w in zip(low, width, strict=True) if w > 0}
    segs = {(int(a), int(n)) for a, n in zip(start, length, strict=True) if n > 0}
    return bands, segs


@pytest.mark.parametrize("case", FAMILY_CASES, ids=list(FAMILY_CASES))
def test_per_item_path_draws_exactly_the_vectorized_runs(case):
    strategy = make(FAMILY_CASES[case], seed=11)
    u = strategy._uniforms(3000)
    # Uniforms at the edges of [0, 1) are where integer rounding goes wrong.
    u[:50] = 0.0
    u[50:100] = np.nextafter(1.0, 0.0)
    low, width, start, length = strategy.runs_from_uniforms(u)
    for i, row in enumerate(u.tolist()):
        bands, segs = strategy.runs_of_one(row)
        expected = runs_as_sets(low[i], width[i], start[i], length[i])
        assert (set(bands), set(segs)) == expected, i


@pytest.mark.parametrize("case", FAMILY_CASES, ids=list(FAMILY_CASES))
def test_batch_of_one_and_large_batches_draw_the_same_distribution(case):
    one = make(FAMILY_CASES[case], seed=1)
    big = make(FAMILY_CASES[case], seed=2)
    small = torch.cat([one(1) for _ in range(1500)])[:, 0].numpy().astype(bool)
    large = big(1500)[:, 0].numpy().astype(bool)
    a, b = region_features(small), region_features(large)
    for name in ("band_fraction", "band_centre_bin", "n_segments", "time_coverage", "n_bands"):
        if np.nanstd(a[name]) == 0 and np.nanstd(b[name]) == 0:
            assert np.nanmean(a[name]) == np.nanmean(b[name])
            continue
        assert ks_2samp(a[name], b[name]).pvalue > 0.001, name


def test_training_defaults_match_the_training_code_description():
    """Exact facts of the training code's mask model (its distributions against a transcription
    are in test_training_strategy.py)."""
    ours = region_features(TrainingAudioStrategy(SPEC, None, N_MELS, T, seed=0).full_size(3000))
    rows = np.round(ours["band_fraction"] * N_MELS).astype(int)
    assert rows.min() == 1 and rows.max() == int(N_MELS * 0.1)
    assert chisquare(np.bincount(rows, minlength=13)[1:]).pvalue > 0.001  # uniform 1..12 rows
    assert np.all(ours["n_bands"] == 1)
    # Segments are at most T/3 long, so a run over 85 % of the clip is a full-clip mask: 30 % of
    # them (binomial sd 0.8 % at 3000 masks).
    full = ours["max_seg_len_frames"] >= 0.85 * T
    assert abs(full.mean() - 0.3) < 0.04
    assert np.all(ours["n_segments"][full] == 1)
    # Abutting segments read as one run, so a run is at least T/10 frames and non-full masks
    # cover at least T/10 and at most 5 * T/3 frames.
    assert ours["mean_seg_len_frames"][~full].min() >= T // 10
    assert ours["n_segments"][~full].max() <= 5


def test_training_code_call_convention_is_a_drop_in():
    # Positional (spectrogram_shape, q_shape, n_mels, T); q_shape None means spectrogram size.
    s = AudioSpecificStrategy((128, 320), None, 128, 320)
    assert s(1, "cpu").shape == (1, 1, 128, 320)
    assert AudioSpecificStrategy()(2).shape == (2, 1, 128, 320)  # the default too
    assert AudioSpecificStrategy(None, None, 64, 100)(1).shape == (1, 1, 64, 100)
    # The training code's keyword names are accepted, and a lone small max_segments works.
    t = AudioSpecificStrategy(
        (128, 320),
        None,
        128,
        320,
        perlin_prob=0.0,
        full_time_prob=0.3,
        max_band_frac=0.1,
        max_segments=5,
    )
    assert t.max_segments == 5 and t.min_segments == 5
    assert t.min_band_rows == 1 and t.max_band_rows == 12
    with pytest.raises(TypeError, match="not_an_option"):
        AudioSpecificStrategy((128, 320), None, 128, 320, not_an_option=3)
    with pytest.raises(TypeError, match="max_band_fracc"):
        TrainingAudioStrategy((128, 320), None, 128, 320, max_band_fracc=0.1)
    out = TrainingAudioStrategy((128, 320), None, 128, 320, seed=0)(1, torch.device("cpu"))
    assert out.dtype == torch.float32 and set(out.unique().tolist()) == {0.0, 1.0}


def test_several_bands_and_full_clip_share():
    s = AudioSpecificStrategy(
        SPEC,
        min_bands=3,
        max_bands=3,
        min_band_rows=2,
        max_band_rows=2,
        full_time_prob=0.8,
        min_segments=1,
        max_segments=2,
        min_seg_len=5,
        max_seg_len=20,  # at most 40 frames: only full-clip masks cover 85 %
        seed=3,
    )
    f = region_features(s.full_size(2000))
    # Three 2-row bands stay three runs unless two touch; touching is rare with 128 rows.
    assert np.mean(f["n_bands"] == 3) > 0.85 and f["n_bands"].max() <= 3
    assert abs(np.mean(f["time_coverage"] >= 0.85) - 0.8) < 0.04


def test_band_widths_in_hz_stay_in_range():
    from analysis.mel import MelGeometry

    centres = MelGeometry().bin_centres_hz
    s = AudioSpecificStrategy(SPEC, min_band_hz=100.0, max_band_hz=400.0, seed=4)
    low, width, _, _ = s.runs_from_uniforms(s._uniforms(3000))
    low, width = low[:, 0], width[:, 0]
    high = low + width - 1
    span = centres[high] - centres[low]
    assert np.all(span <= 400.0)
    # Widening by one more row would pass the drawn width's lower bound or the axis top.
    wider = np.minimum(high + 1, N_MELS - 1)
    assert np.all((centres[wider] - centres[low] > 100.0) | (high == N_MELS - 1))
    # Low bins are a few Hz apart, so Hz-wide bands hold many more rows there than at the top.
    assert width[centres[low] < 500].mean() > 3 * width[centres[low] > 4000].mean()


def test_perlin_share_mixes_in_perlin_masks():
    s = AudioSpecificStrategy(SPEC, perlin_prob=0.5, seed=5)
    masks = s.full_size(400)
    # A band mask is an outer product: each masked row has the same frames. Perlin masks are not.
    outer = np.array([np.all(m[m.any(1)] == m[m.any(1)][0]) if m.any() else True for m in masks])
    assert 0.35 < 1 - outer.mean() < 0.65
    assert s(3).shape == (3, 1, 128, 320)


STRATEGY_MODULE = '''
import torch

class MixtureStrategy:
    """A user's strategy: a full-clip band with probability p, else two short segments."""

    def __init__(self, spectrogram_shape, q_shape, n_mels, T, full_prob=0.5, rows=4):
        self.n_mels, self.T, self.full_prob, self.rows = n_mels, T, full_prob, rows

    def __call__(self, batch_size, device):
        out = torch.zeros(batch_size, 1, self.n_mels, self.T)
        for b in range(batch_size):
            low = int(torch.randint(0, self.n_mels - self.rows + 1, (1,)))
            if torch.rand(1).item() < self.full_prob:
                out[b, 0, low : low + self.rows, :] = 1
            else:
                out[b, 0, low : low + self.rows, 10:30] = 1
                out[b, 0, low : low + self.rows, 200:230] = 1
        return out.to(device)


def make_constant(spectrogram_shape, q_shape, n_mels, T, value=1.0, shape=None):
    def draw(batch_size, device):
        out = torch.zeros(batch_size, 1, n_mels, T) if shape is None else torch.zeros(shape)
        out[..., :3, :] = value
        return out
    return draw


class Exploding:
    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, batch_size, device):
        raise RuntimeError("boom")
'''


@pytest.fixture
def user_folder(tmp_path):
    folder = tmp_path / "their_training_repo"
    folder.mkdir()
    (folder / "their_masks.py").write_text(textwrap.dedent(STRATEGY_MODULE))
    return folder


def test_imported_class_and_function_are_measured_as_black_boxes(user_folder):
    preset = {
        "kind": "python",
        "target": "their_masks:MixtureStrategy",
        "kwargs": {"full_prob": 0.7},
        "path": str(user_folder),
    }
    a = build_strategy(preset, SPEC, seed=1, name="mine").full_size(600)
    b = build_strategy(preset, SPEC, seed=1, name="mine").full_size(600)
    assert np.array_equal(a, b)  # global RNGs are seeded per preset
    f = region_features(a)
    assert abs(np.mean(f["time_coverage"] == 1.0) - 0.7) < 0.07
    assert set(np.unique(f["n_segments"])) == {1.0, 2.0}
    fn = {"kind": "python", "target": "their_masks:make_constant", "path": str(user_folder)}
    masks = build_strategy(fn, SPEC, q_shape=(32, 80), seed=0)(2)
    assert masks.shape == (2, 1, 32, 80) and masks[:, 0, 0].all() and not masks[:, 0, 1:].any()


@pytest.mark.parametrize(
    "target, kwargs, message",
    [
        ("no_such_module:X", {}, "cannot import 'no_such_module'"),
        ("their_masks:Missing", {}, "has no attribute 'Missing'"),
        ("their_masks:make_constant", {"shape": (2, 128, 320)}, r"returned shape \(2, 128, 320\)"),
        ("their_masks:make_constant", {"value": 0.5}, "values other than 0 and 1"),
        ("their_masks:Exploding", {}, "raised RuntimeError: boom"),
        (
            "their_masks:MixtureStrategy",
            {"bad_kw": 1},
            "building their_masks:MixtureStrategy failed",
        ),
    ],
)
def test_imported_strategy_errors_name_the_preset(user_folder, target, kwargs, message):
    preset = {"kind": "python", "target": target, "kwargs": kwargs, "path": str(user_folder)}
    with pytest.raises(StrategyError, match=message) as info:
        build_strategy(preset, SPEC, seed=0, name="theirs").full_size(2)
    if "import" not in message and "attribute" not in message:
        assert "preset 'theirs'" in str(info.value)


def test_masks_stage_measures_an_imported_preset(params, tmp_path, user_folder):
    from analysis.io import read_csv
    from analysis.masks import masks_stage

    params["masks"].update(n_masks=40, n_samples=2)
    params["masks"]["presets"] = {
        "theirs": {
            "kind": "python",
            "target": "their_masks:MixtureStrategy",
            "kwargs": {"full_prob": 1.0},
            "path": str(user_folder),
        },
        "broken": {"kind": "python", "target": "their_masks:Exploding", "path": str(user_folder)},
    }
    with pytest.raises(StrategyError, match="masks.presets.broken: preset 'broken'"):
        masks_stage(params, tmp_path / "masks")
    del params["masks"]["presets"]["broken"]
    out = masks_stage(params, tmp_path / "masks")
    rows = read_csv(out / "features.csv")
    assert len(rows) == 40 and all(float(r["time_coverage"]) == 1.0 for r in rows)
    assert all(float(r["band_fraction"]) == 4 / 128 for r in rows)


def test_machine_specific_strategy_uses_each_types_fit(tmp_path):
    fitted = {
        "min_band_fraction": 0.05,
        "max_band_fraction": 0.05,
        "min_bands": 1,
        "max_bands": 1,
        "full_time_prob": 1.0,
        "min_segments": 1,
        "max_segments": 1,
        "min_seg_len": 10,
        "max_seg_len": 10,
        "min_band_position": 0.0,
        "max_band_position": 0.25,
    }
    lacking = verdict_json("not_enough_evidence", None)
    recs = {
        "presets": {"current": {"kind": "audio_specific"}},
        "rows": [
            {
                "machine_type": "fan",
                "machine_id": "all",
                "status": "ok",
                "fitted": fitted,
                "verdict": verdict_json("switch"),
            },
            {
                "machine_type": "fan",
                "machine_id": "id_00",
                "status": "ok",
                "fitted": {},
                "verdict": verdict_json("switch"),
            },
            {
                "machine_type": "valve",
                "machine_id": "all",
                "status": "not enough evidence",
                "verdict": lacking,
            },
        ],
    }
    path = tmp_path / "recommendations.json"
    path.write_text(json.dumps(recs))
    fan = MachineSpecificStrategy(SPEC, None, machine_type="fan", recommendations=path, seed=0)
    masks = torch.cat([fan(1, "cpu") for _ in range(200)])[:, 0].numpy().astype(bool)
    f = region_features(masks)
    assert np.all(f["time_coverage"] >= 0.85) and np.all(f["band_fraction"] == 6 / 128)
    assert np.nanmax(f["band_centre_bin"]) < 32
    assert fan.user_setting_types == {"valve": "planted"}
    valve = fan(4, "cpu", machine_type="valve")  # not enough evidence: the setting you run
    assert fan.choices["valve"] == "current" and valve.shape == (4, 1, 128, 320)
    with pytest.warns(UserWarning, match="'ToyCar' is not in the recommendations") as caught:
        fan(1, "cpu", machine_type="ToyCar")  # not in the file: today's training strategy
        fan(1, "cpu", machine_type="ToyCar")
    assert len(caught) == 1  # warned once per type, not once per item
    with pytest.raises(ValueError, match="pump"):
        MachineSpecificStrategy(SPEC, machine_type="pump", recommendations=path)
    with pytest.raises(FileNotFoundError, match="absolute path"):
        MachineSpecificStrategy(SPEC, machine_type="fan", recommendations=tmp_path / "nope.json")


TRAINING_CODE_STRATEGIES = '''
import torch


class PerlinStrategy:
    """The training code's own Perlin strategy: other parameters after (spectrogram_shape, q_shape)."""

    def __init__(self, spectrogram_shape, q_shape, threshold=0.5, perlin_scale_range=(0, 6)):
        self.shape, self.threshold = spectrogram_shape, threshold

    def __call__(self, batch_size, device):
        out = torch.zeros(batch_size, 1, *self.shape)
        out[:, :, : int(10 * self.threshold)] = 1  # rows 0..5 at the default threshold
        return out


class PerMachineStrategy:
    """The newer per-machine variant: n_mels in another position."""

    def __init__(self, machine_type, n_mels, spectrogram_shape=None, T=None, rows=3):
        self.n_mels, self.T, self.rows = n_mels, T, rows

    def __call__(self, batch_size, device):
        out = torch.zeros(batch_size, 1, self.n_mels, self.T)
        out[:, :, -self.rows :] = 1
        return out
'''


def write_module(folder, name, text):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(text))
    return folder


def test_strategies_with_other_signatures_are_built_by_keyword(tmp_path):
    folder = write_module(tmp_path / "training_repo", "masks_today", TRAINING_CODE_STRATEGIES)
    perlin = {"kind": "python", "target": "masks_today:PerlinStrategy", "path": str(folder)}
    strategy = build_strategy(perlin, SPEC, seed=0, name="theirs_perlin")
    assert strategy.call == "masks_today:PerlinStrategy(spectrogram_shape=(128, 320), q_shape=None)"
    masks = strategy.full_size(2)
    assert masks[:, :5].all() and not masks[:, 5:].any()
    machine = {
        "kind": "python",
        "target": "masks_today:PerMachineStrategy",
        "path": str(folder),
        "kwargs": {"machine_type": "fan"},
    }
    strategy = build_strategy(machine, SPEC, seed=0, name="per_machine")
    assert "n_mels=128" in strategy.call and "T=320" in strategy.call
    assert strategy.full_size(1)[0, -3:].all() and not strategy.full_size(1)[0, :-3].any()


def test_two_same_named_modules_from_different_folders_are_each_themselves(tmp_path):
    template = """
import torch

class Strategy:
    def __init__(self, spectrogram_shape, q_shape, n_mels, T):
        self.n_mels, self.T = n_mels, T

    def __call__(self, batch_size, device):
        out = torch.zeros(batch_size, 1, self.n_mels, self.T)
        out[:, :, ROWS] = 1
        return out
"""
    a = write_module(tmp_path / "a", "masks", template.replace("ROWS", ":2"))
    b = write_module(tmp_path / "b", "masks", template.replace("ROWS", "-7:"))
    sa = build_strategy(
        {"kind": "python", "target": "masks:Strategy", "path": str(a)}, SPEC, name="a"
    )
    sb = build_strategy(
        {"kind": "python", "target": "masks:Strategy", "path": str(b)}, SPEC, name="b"
    )
    assert sa.full_size(1)[0].sum(axis=1).nonzero()[0].tolist() == [0, 1]
    assert sb.full_size(1)[0].sum(axis=1).nonzero()[0].tolist() == list(range(121, 128))


def test_a_failing_python_preset_stops_check_params_naming_it(tmp_path, params):
    from analysis.checks import check_python_presets
    from analysis.params import ParamsError

    folder = write_module(tmp_path / "repo", "theirs", TRAINING_CODE_STRATEGIES)
    log = tmp_path / "logs" / "presets.log"
    params["masks"]["presets"] = {
        "fine": {"kind": "python", "target": "theirs:PerlinStrategy", "path": str(folder)},
        "missing": {"kind": "python", "target": "theirs:NoSuchStrategy", "path": str(folder)},
    }
    with pytest.raises(ParamsError, match=r"masks.presets.missing: .*has no attribute") as info:
        check_python_presets(params, log)
    assert str(log) in str(info.value) and "Traceback" in log.read_text()
    del params["masks"]["presets"]["missing"]
    check_python_presets(params, log)  # the fine one passes


def verdict_json(kind: str, candidate: str | None = "fitted") -> dict:
    """A verdict record as recommendations.json holds it (the user runs 'current')."""
    from analysis.artifacts import Verdict, VerdictRecord

    return VerdictRecord(
        Verdict(kind), candidate, "current", -0.1, -0.2, -0.05, 0.9, 1.0, 10, 8, "planted"
    ).to_json()


def test_machine_specific_strategy_follows_each_types_verdict(tmp_path):
    """Where the verdict keeps the user's setting (or has not enough evidence), the type draws
    that setting's masks, not its fit; only a type missing from the file falls back."""
    fitted = {
        "min_band_fraction": 0.05,
        "max_band_fraction": 0.05,
        "min_bands": 1,
        "max_bands": 1,
        "full_time_prob": 1.0,
        "min_segments": 1,
        "max_segments": 1,
        "min_seg_len": 10,
        "max_seg_len": 10,
        "min_band_position": 0.0,
        "max_band_position": 0.25,
    }
    recs = {
        "presets": {"current": {"kind": "audio_specific", "min_segments": 10, "max_segments": 160}},
        "rows": [
            {
                "machine_type": "fan",
                "machine_id": "all",
                "status": "ok",
                "fitted": fitted,
                "verdict": verdict_json("switch"),
            },
            {
                "machine_type": "pump",
                "machine_id": "all",
                "status": "ok",
                "fitted": fitted,
                "verdict": verdict_json("keep"),
            },
            {
                "machine_type": "valve",
                "machine_id": "all",
                "status": "not enough evidence: too few",
                "verdict": verdict_json("not_enough_evidence", None),
            },
        ],
    }
    path = tmp_path / "recommendations.json"
    path.write_text(json.dumps(recs))
    s = MachineSpecificStrategy(SPEC, None, recommendations=path, seed=0)
    assert s.choices == {"fan": "fitted", "pump": "current", "valve": "current"}
    assert set(s.user_setting_types) == {"pump", "valve"}
    assert "fan: fitted" in repr(s) and "TrainingAudioStrategy" in repr(s)
    with pytest.warns(UserWarning, match="not in the recommendations"):
        s(1, "cpu", machine_type="ToyCar")
    fan = region_features(s(50, "cpu", machine_type="fan")[:, 0].numpy().astype(bool))
    pump = region_features(s(50, "cpu", machine_type="pump")[:, 0].numpy().astype(bool))
    assert np.all(fan["time_coverage"] >= 0.85) and np.all(fan["n_segments"] == 1)
    assert np.all(fan["band_centre_fraction"] < 0.25)  # the fit's band position
    assert np.mean(pump["band_centre_fraction"] > 0.25) > 0.5  # current: bands anywhere


def test_a_mixture_draws_each_component_by_its_weight():
    from analysis.strategies import MixtureStrategy

    full = {
        "min_band_rows": 4,
        "max_band_rows": 4,
        "full_time_prob": 1.0,
        "min_band_position": 0.0,
        "max_band_position": 0.2,
    }
    short = {
        "min_band_rows": 4,
        "max_band_rows": 4,
        "min_segments": 3,
        "max_segments": 3,
        "min_seg_len": 10,
        "max_seg_len": 20,
        "min_band_position": 0.8,
        "max_band_position": 1.0,
    }
    components = [{"weight": 0.25, "fitted": full}, {"weight": 0.75, "fitted": short}]
    s = MixtureStrategy(SPEC, None, components=components, seed=1)
    masks = s.full_size(2000)
    low = masks[:, :26].any(axis=(1, 2))  # drawn by the first component
    assert abs(low.mean() - 0.25) < 0.03
    assert np.all(masks[low].any(axis=1).mean(axis=1) >= 0.85)
    assert np.array_equal(
        masks, MixtureStrategy(SPEC, None, components=components, seed=1).full_size(2000)
    )
    one = torch.cat([s(1, "cpu") for _ in range(400)])[:, 0].numpy().astype(bool)
    assert abs(one[:, :26].any(axis=(1, 2)).mean() - 0.25) < 0.07  # the per-item call too


def test_machine_specific_strategy_builds_a_recommended_mixture(tmp_path):
    components = [
        {"machine_id": "id_00", "weight": 0.5, "fitted": {"full_time_prob": 1.0}},
        {"machine_id": "id_02", "weight": 0.5, "fitted": {"min_segments": 3, "max_segments": 3}},
    ]
    recs = {
        "presets": {},
        "rows": [
            {
                "machine_type": "fan",
                "machine_id": "all",
                "status": "ok",
                "fitted": {},
                "verdict": verdict_json("switch"),
                "form": "mixture",
                "mixture": components,
            }
        ],
    }
    path = tmp_path / "recommendations.json"
    path.write_text(json.dumps(recs))
    s = MachineSpecificStrategy(SPEC, None, machine_type="fan", recommendations=path, seed=0)
    assert s.choices == {"fan": "mixture"}
    f = region_features(s(400, "cpu")[:, 0].numpy().astype(bool))
    assert 0.4 < np.mean(f["time_coverage"] >= 0.85) < 0.6
