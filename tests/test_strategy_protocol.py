"""One protocol, one registry, one error: every kind of mask strategy is a MaskStrategy, the
registry lists every kind (params checks, factory and MachineSpecificStrategy read it), and
every bad setting of every kind raises StrategySettingError naming the setting."""

from __future__ import annotations

import inspect
import json
import textwrap

import numpy as np
import pytest

from analysis.strategies import (
    KINDS,
    PRESET_KINDS,
    SETTING_KINDS,
    MachineSpecificStrategy,
    MaskStrategy,
    StrategySettingError,
    build_strategy,
    strategy_class,
)
from analysis.strategies.presets import check_preset

SPEC = (128, 320)
FITTED = {"min_segments": 1, "max_segments": 3, "min_band_fraction": 0.05, "max_band_fraction": 0.1}
USER_MODULE = """
import torch


class BandAtTheBottom:
    def __init__(self, spectrogram_shape, q_shape=None, rows=4):
        self.shape, self.rows = spectrogram_shape, rows

    def __call__(self, batch_size, device):
        out = torch.zeros(batch_size, 1, *self.shape)
        out[:, :, : self.rows] = 1.0
        return out
"""


@pytest.fixture
def recommendations(tmp_path):
    from tests.test_strategies import verdict_json

    recs = {
        "presets": {"current": {"kind": "audio_specific"}},
        "rows": [
            {
                "machine_type": "fan",
                "machine_id": "all",
                "status": "ok",
                "fitted": FITTED,
                "verdict": verdict_json("switch"),
            },
            {
                "machine_type": "valve",
                "machine_id": "all",
                "status": "not enough evidence",
                "verdict": verdict_json("not_enough_evidence", None),
            },
        ],
    }
    path = tmp_path / "recommendations.json"
    path.write_text(json.dumps(recs))
    return path


def one_of_each(tmp_path, recommendations) -> dict:
    """A strategy of every registered kind, with its own settings (not only defaults)."""
    (tmp_path / "user_masks.py").write_text(textwrap.dedent(USER_MODULE))
    settings = {
        "audio_specific": {"min_segments": 3, "max_segments": 20},
        "training_audio": {"full_time_prob": 0.5},
        "dsr_perlin": {"max_scale_exp": 4},
        "perlin": {"threshold": 0.4},
        "python": {"target": "user_masks:BandAtTheBottom", "path": str(tmp_path)},
        "mixture": {"components": [{"weight": 1, "fitted": FITTED}, {"weight": 3, "fitted": {}}]},
    }
    built = {k: build_strategy({"kind": k, **s}, SPEC, seed=1) for k, s in settings.items()}
    built["machine_specific"] = MachineSpecificStrategy(
        SPEC, machine_type="fan", recommendations=recommendations, seed=1
    )
    return built


def test_the_registry_lists_every_kind_once_and_each_class_says_its_kind():
    assert set(PRESET_KINDS) < set(SETTING_KINDS) < set(KINDS)
    assert set(KINDS) - set(SETTING_KINDS) == {"machine_specific"}
    assert set(SETTING_KINDS) - set(PRESET_KINDS) == {"mixture"}
    for kind in KINDS:
        cls = strategy_class(kind)
        assert cls.kind == kind, (kind, cls)
        # Every constructor takes the training code's convention and a seed.
        names = list(inspect.signature(cls).parameters)
        assert "seed" in names and "q_shape" in names and "spectrogram_shape" in names, kind


def test_every_registered_kind_is_a_mask_strategy(tmp_path, recommendations):
    strategies = one_of_each(tmp_path, recommendations)
    assert set(strategies) == set(KINDS)
    for kind, strategy in strategies.items():
        assert isinstance(strategy, MaskStrategy), kind
        assert strategy.kind == kind
        masks = strategy(3, "cpu")
        assert tuple(masks.shape) == (3, 1, *SPEC), kind
        full = strategy.full_size(3)
        assert full.shape == (3, *SPEC) and full.dtype == bool, kind
    # The protocol means something: an object without describe() is not one.

    class NoDescribe:
        kind, spectrogram_shape, q_shape = "x", SPEC, SPEC

        def __call__(self, batch_size, device="cpu"): ...

        def full_size(self, batch_size): ...

    assert not isinstance(NoDescribe(), MaskStrategy)


def test_machine_specific_full_size_draws_the_types_setting(recommendations):
    fan = MachineSpecificStrategy(SPEC, machine_type="fan", recommendations=recommendations, seed=3)
    masks = fan.full_size(400)
    # At most 3 segments of the fan's fit, a band 6..12 rows high (5-10 % of 128): the fit's.
    rows = masks.any(axis=2).sum(axis=1)
    assert rows.min() >= 6 and rows.max() <= 12
    assert fan.spectrogram_shape == SPEC
    # valve's verdict keeps the user's setting ('current'): drawn, no warning
    assert fan.full_size(2, machine_type="valve").shape == (2, *SPEC)


def test_describe_says_the_kind_and_what_differs(tmp_path, recommendations):
    texts = {k: s.describe() for k, s in one_of_each(tmp_path, recommendations).items()}
    for kind, text in texts.items():
        assert isinstance(text, str) and text.startswith(f"{kind}") and len(text) < 400, text
    assert (
        "min_segments=3" in texts["audio_specific"] and "max_segments=20" in texts["audio_specific"]
    )
    assert "max_seg_len" not in texts["audio_specific"]  # a default is not repeated
    assert "full_time_prob=0.5" in texts["training_audio"]
    assert "max_scale_exp=4" in texts["dsr_perlin"]
    assert "threshold=0.4" in texts["perlin"]
    assert "user_masks:BandAtTheBottom" in texts["python"]
    assert "0.25 x" in texts["mixture"] and "0.75 x" in texts["mixture"]
    assert "fan: fitted" in texts["machine_specific"]
    assert "valve: current" in texts["machine_specific"]
    assert "any other type: fallback (training_audio)" in texts["machine_specific"]


# (kind, settings, the key the error must name). Every kind: a value out of range, a wrong
# type, a rule between two settings, an unknown name.
BAD_SETTINGS = [
    ("audio_specific", {"min_segments": 0}, "min_segments"),
    ("audio_specific", {"max_band_fraction": 1.5}, "max_band_fraction"),
    ("audio_specific", {"min_segments": 30, "max_segments": 20}, "min_segments"),
    ("audio_specific", {"max_seg_len": 999}, "max_seg_len"),
    ("audio_specific", {"min_seg_len": 2.5}, "min_seg_len"),
    ("audio_specific", {"disjoint_segments": "yes"}, "disjoint_segments"),
    ("audio_specific", {"min_band_rows": 3}, "min_band_rows"),
    ("audio_specific", {"max_band_frac": 0}, "max_band_frac"),
    ("audio_specific", {"perlin_threshold": 1.0}, "perlin_threshold"),
    ("audio_specific", {"not_an_option": 1}, "not_an_option"),
    ("training_audio", {"max_segments": 1}, "max_segments"),
    ("training_audio", {"full_time_prob": 1.5}, "full_time_prob"),
    ("training_audio", {"max_band_frac": "wide"}, "max_band_frac"),
    ("training_audio", {"min_segments": 2}, "min_segments"),
    ("dsr_perlin", {"min_threshold": 0.7, "max_threshold": 0.5}, "min_threshold"),
    ("dsr_perlin", {"max_scale_exp": 9}, "max_scale_exp"),
    ("dsr_perlin", {"min_scale_exp": 4, "max_scale_exp": 2}, "min_scale_exp"),
    ("dsr_perlin", {"threshold": 0.5}, "threshold"),
    ("perlin", {"threshold": 1.0}, "threshold"),
    ("perlin", {"min_scale_exp": -1}, "min_scale_exp"),
    ("perlin", {"rotate": 1}, "rotate"),
    ("perlin", {"min_threshold": 0.3}, "min_threshold"),
    ("python", {"target": "no_colon"}, "target"),
    ("python", {}, "target"),
    ("python", {"target": "json:no_such_name"}, "target"),
    ("python", {"target": "json:dumps", "kwargs": [1]}, "kwargs"),
    ("python", {"target": "json:dumps", "path": "/no/such/folder"}, "path"),
    ("python", {"target": "json:dumps", "rows": 3}, "rows"),
    ("mixture", {"components": []}, "components"),
    ("mixture", {"components": [{"weight": -1, "fitted": {}}]}, "weight"),
    ("mixture", {"components": [{"weight": 0, "fitted": {}}]}, "weight"),
    ("mixture", {"components": [{"weight": 1, "fitted": {"min_segments": 0}}]}, "min_segments"),
    ("mixture", {"components": [{"weight": 1}]}, "components"),
    ("mixture", {"components": [], "seed_offset": 1}, "seed_offset"),
    ("blobs", {}, "kind"),
    ("machine_specific", {}, "kind"),  # not built from a settings mapping
]


@pytest.mark.parametrize("kind, settings, key", BAD_SETTINGS)
def test_every_bad_setting_of_every_kind_raises_one_error_naming_it(kind, settings, key):
    with pytest.raises(StrategySettingError) as info:
        build_strategy({"kind": kind, **settings}, SPEC, seed=0)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.key == key and key in str(err) and err.allowed, (err.key, str(err))
    imports = settings.get("target") == "json:no_such_name"  # found by check-params' trial
    if kind in PRESET_KINDS and key != "kind" and not imports:
        # The params check reads the same rules: the same key, before any mask is drawn.
        with pytest.raises(StrategySettingError) as checked:
            check_preset({"kind": kind, **settings}, *SPEC, 0.0, 8000.0)
        assert checked.value.key == key


@pytest.mark.parametrize(
    "arguments, key",
    [
        ({"projection": "bicubic"}, "projection"),
        ({"q_shape": (200, 10)}, "q_shape"),
        ({"q_shape": (0, 10)}, "q_shape"),
    ],
)
@pytest.mark.parametrize("kind", ["audio_specific", "training_audio", "dsr_perlin", "perlin"])
def test_bad_call_convention_arguments_raise_the_same_error(kind, arguments, key):
    with pytest.raises(StrategySettingError) as info:
        build_strategy({"kind": kind}, SPEC, **arguments)
    assert info.value.key == key


def test_bad_machine_specific_settings_raise_the_same_error(recommendations):
    with pytest.raises(StrategySettingError) as info:
        MachineSpecificStrategy(SPEC, machine_type="pump", recommendations=recommendations)
    assert info.value.key == "machine_type" and "fan" in info.value.allowed
    with pytest.raises(StrategySettingError) as info:
        MachineSpecificStrategy(SPEC, n_mels=64, T=320, recommendations=recommendations)
    assert info.value.key == "n_mels"
    unset = MachineSpecificStrategy(SPEC, recommendations=recommendations)
    with pytest.raises(StrategySettingError) as info:
        unset(1, "cpu")
    assert info.value.key == "machine_type"


def test_an_unknown_setting_is_also_a_type_error_as_pythons_own_is():
    """Training code that catches TypeError for a wrong keyword keeps working."""
    from analysis.strategies import AudioSpecificStrategy, TrainingAudioStrategy

    for cls, name in ((AudioSpecificStrategy, "max_band_fracc"), (TrainingAudioStrategy, "bands")):
        with pytest.raises(TypeError, match=name) as info:
            cls(SPEC, **{name: 1})
        assert isinstance(info.value, StrategySettingError) and info.value.key == name


def test_a_kind_that_no_preset_may_have_is_refused_by_the_params_check():
    for kind in PRESET_KINDS:
        if kind != "python":
            check_preset({"kind": kind}, *SPEC, 0.0, 8000.0)  # defaults pass
    for kind in ("mixture", "machine_specific", "blobs"):
        with pytest.raises(StrategySettingError) as info:
            check_preset({"kind": kind}, *SPEC, 0.0, 8000.0)
        assert info.value.key == "kind" and all(k in info.value.allowed for k in PRESET_KINDS)


def test_numpy_numbers_are_settings_too():
    """Fitted settings may carry numpy scalars: they are numbers, not bad types."""
    strategy = build_strategy(
        {
            "min_segments": np.int64(2),
            "max_segments": np.int64(4),
            "max_band_fraction": np.float64(0.2),
        },
        SPEC,
        seed=0,
    )
    assert strategy.options["max_segments"] == 4
