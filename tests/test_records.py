"""The records between stages: keys made by one function, settings and records that round-trip
through their files."""

from __future__ import annotations

import json
import re

import pytest

from analysis import artifacts as art
from analysis.recommend import recommendation_columns
from analysis.records import DownstreamRecord, MaskSetting, diff_key, score_key


def test_score_and_difference_keys_are_the_documented_names():
    assert score_key("current") == "score_current"
    assert score_key("noise_level", "ci_high") == "score_noise_level_ci_high"
    assert score_key("recommended", grid="q_top") == "score_recommended_q_top"
    assert score_key("mixture", "ci_low", grid="q_bot") == "score_mixture_q_bot_ci_low"
    assert diff_key("fitted", "best") == "diff_fitted_vs_best"
    assert diff_key("best", "current", "ci_low") == "diff_best_vs_current_ci_low"
    assert diff_key("mixture", "single", "verdict") == "diff_mixture_vs_single_verdict"
    with pytest.raises(ValueError, match="verdict"):
        score_key("current", "verdict")  # a score has no verdict; a difference has
    with pytest.raises(ValueError, match="ci_mid"):
        diff_key("fitted", "best", "ci_mid")


def test_every_score_column_of_the_table_is_a_score_key():
    presets = ["current", "proposed", "mine"]
    columns = recommendation_columns(presets, ["q_bot"])
    made = {
        score_key(name, part, grid)
        for name in [*presets, "recommended", "noise_level", "single", "mixture"]
        for part in ("", "ci_low", "ci_high")
        for grid in (None, "q_bot")
    }
    scores = [c for c in columns if c.startswith("score_")]
    assert scores and set(scores) <= made
    assert score_key("mine") in columns and score_key("mine", grid="q_bot") in columns
    assert len(columns) == len(set(columns))
    assert "region_full_clip_share" in columns and "full_clip_share" not in columns


def test_a_mask_setting_round_trips_as_the_plain_mapping():
    preset = {"kind": "training_audio", "max_segments": 5}
    assert MaskSetting.from_json(preset).to_json() == preset
    fitted = {"min_bands": 1, "max_bands": 2}
    assert MaskSetting.from_json(fitted) == MaskSetting.fitted(fitted)  # no kind: audio_specific
    components = [{"machine_id": "id_00", "weight": 1.0, "fitted": fitted}]
    mixture = MaskSetting.mixture(components)
    assert mixture.to_json() == {"kind": "mixture", "components": components}
    row = {"form": "mixture", "mixture": components, "fitted": fitted}
    assert art.fitted_form(row) == mixture
    assert art.fitted_form({**row, "form": "single"}) == MaskSetting.fitted(fitted)


def test_the_downstream_record_is_written_and_read_through_one_type(tmp_path):
    record = DownstreamRecord(True, "run it", {"fan": {"valid": True}}, "additive", 10, [32, 80])
    art.write_downstream(tmp_path, record, [], ("machine_type",))
    assert art.read_downstream(tmp_path) == record
    art.write_downstream(tmp_path, {"enabled": False, "how_to_run": "x"}, [], ("machine_type",))
    assert json.loads((tmp_path / "downstream.json").read_text()) == {
        "enabled": False,
        "how_to_run": "x",
    }
    with pytest.raises(ValueError, match="speed"):  # a key the record does not declare
        art.write_downstream(tmp_path, {"enabled": True, "how_to_run": "x", "speed": 1}, [], ())


def test_no_module_but_records_builds_a_score_or_difference_key():
    """Keys are made by score_key / diff_key only: no f-string or concatenation elsewhere in
    the package or the report template builds ``score_...`` or ``diff_..._vs_...``."""
    from tests.conftest import ROOT

    built = re.compile(
        r"""f["']score_|f["']diff_|["']score_["']\s*[~+]|["']diff_["']\s*[~+]|_vs_\{"""
    )
    sources = [p for p in (ROOT / "analysis").rglob("*.py") if p.name != "records.py"]
    sources.append(ROOT / "report" / "report.qmd.j2")
    offenders = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in sources
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if built.search(line)
    ]
    assert not offenders, offenders
