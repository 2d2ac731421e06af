"""The verdict against the user's setting: Holm, stability, "not enough evidence", and planted
region sets with a known answer (switch, keep, too few)."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.artifacts import Verdict, parse_region_row, row_verdict
from analysis.decision import (
    MIN_INDEPENDENT_HOLDOUT,
    STABLE_SHARE,
    SplitTest,
    clips_to_settle,
    decide,
    holm_levels,
)
from analysis.fit import strategy_features
from analysis.mel import MelGeometry
from analysis.recommend import finalize_verdicts, recommend_group
from analysis.regions import FEATURE_COLUMNS, profile_features
from analysis.report_text import comparison_sentence, verdict_label
from analysis.strategies import AudioSpecificStrategy

GEOMETRY = MelGeometry()
N_MELS, T = GEOMETRY.spectrogram_shape


def test_holm_steps_down_and_stops_at_the_first_failure():
    # alpha 0.05 over three: the smallest p at 0.05/3, the next at 0.05/2, the last at 0.05.
    levels = holm_levels({"a": 0.001, "b": 0.02, "c": 0.04}, 0.05)
    assert levels == pytest.approx({"a": 0.05 / 3, "b": 0.025, "c": 0.05})
    # 0.03 fails its level 0.025: the procedure stops, and the larger p is judged there too.
    levels = holm_levels({"c": 0.001, "a": 0.03, "b": 0.04}, 0.05)
    assert levels == pytest.approx({"c": 0.05 / 3, "a": 0.025, "b": 0.025})
    assert holm_levels({"only": 0.2}, 0.05) == {"only": 0.05}


def planted_test(centre: float, n_independent: int = 12, candidate: str = "fitted") -> SplitTest:
    """A split whose bootstrap differences are spread +-0.05 around ``centre``."""
    boots = centre + np.linspace(-0.05, 0.05, 201)
    return SplitTest(candidate, n_independent, centre, boots)


def test_a_stable_closer_candidate_is_a_switch_checked_against_its_interval():
    tests = [planted_test(-0.2)] * 10
    v = decide(tests, 0.025, "current", 0.5, 1.0)
    assert v.kind is Verdict.SWITCH and v.candidate == "fitted" and v.recommended == "fitted"
    assert v.ci_high < 0 and v.corrected_level == pytest.approx(0.95)
    assert v.stability_share == 1.0 and v.clips_needed is None


def test_a_verdict_that_flips_between_splits_is_not_enough_evidence():
    # The first split says switch; only 6 of 10 agree (needs 80 %).
    tests = [planted_test(-0.2)] * 6 + [planted_test(0.0)] * 4
    v = decide(tests, 0.025, "current", 0.5, 1.0)
    assert v.kind is Verdict.NOT_ENOUGH_EVIDENCE and v.stability_share == 0.6 < STABLE_SHARE
    assert "6 of 10" in v.reason and v.recommended == "current"


def test_too_few_held_out_regions_give_no_test_and_say_how_many_clips_would():
    first = SplitTest("fitted", 2, -0.3, None)
    v = decide([first], 0.05, "current", 0.5, 1.0)
    assert v.kind is Verdict.NOT_ENOUGH_EVIDENCE and v.ci_low is None
    # 3 more independent held-out regions, at 0.5 held-out regions per clip: 6 more clips.
    assert v.clips_needed == 6 == 2 * (MIN_INDEPENDENT_HOLDOUT - 2)


def test_clips_to_settle_follow_the_square_root_law():
    # Half-width 0.05 at 12 regions against a difference of 0.025: 4x the regions (36 more),
    # at 0.5 held-out region per clip: 72 clips.
    test = planted_test(-0.025)
    assert clips_to_settle(test, 0.0, 0.5, 1.0) == 72
    assert clips_to_settle(planted_test(0.1), 0.025, 0.5, 1.0) is None  # not closer at all


def region_rows(setting: dict, n_per_id: int, ids=("id_00", "id_02"), seed=0) -> list[dict]:
    """Parsed region rows of clips whose regions are masks of ``setting`` (the known answer)."""
    rows = []
    for k, mid in enumerate(ids):
        strategy = AudioSpecificStrategy(GEOMETRY.spectrogram_shape, seed=seed + k, **setting)
        feats = profile_features(*strategy.draw_factors(n_per_id))
        for i in range(n_per_id):
            row = {c: str(float(feats[c][i])) for c in FEATURE_COLUMNS}
            row.update(file=f"slider/test/anomaly_{mid}_{i:08d}.wav", machine_id=mid, found="1")
            row["band_centre_bin"] = str(float(feats["band_centre_fraction"][i]) * N_MELS - 0.5)
            rows.append(parse_region_row(row))
    return rows


CURRENT = {  # the 'current' preset of params.yaml
    "min_band_fraction": 0.05,
    "max_band_fraction": 0.15,
    "min_segments": 10,
    "max_segments": 160,
    "min_seg_len": 1,
    "max_seg_len": 80,
}
SLIDER_LIKE = {  # one wide high band over most of the clip: far from 'current'
    "min_band_fraction": 0.2,
    "max_band_fraction": 0.3,
    "min_band_position": 0.6,
    "max_band_position": 0.9,
    "full_time_prob": 1.0,
}


@pytest.fixture
def settings(params):
    s = dict(params["recommend"])
    s.update(
        n_masks_per_candidate=64,
        n_search_candidates=24,
        n_refine_rounds=1,
        n_bootstrap=200,
        n_splits=5,
        min_anomaly_clips=3,
    )
    return s


def presets() -> dict:
    return {
        "current": strategy_features(CURRENT, GEOMETRY, 400, seed=0),
        "proposed": strategy_features(
            {"min_segments": 3, "max_segments": 20, "min_seg_len": 5, "max_seg_len": 60},
            GEOMETRY,
            400,
            seed=1,
        ),
    }


def run_type(rows: list[dict], settings: dict) -> dict:
    row = recommend_group("slider", "all", rows, {}, presets(), GEOMETRY, settings)
    finalize_verdicts([row], settings)
    return row


def check_against_its_own_numbers(row: dict) -> None:
    """Every verdict follows rule 1 from the numbers it carries."""
    v = row_verdict(row)
    if v.kind is Verdict.SWITCH:
        assert v.ci_high < 0 and v.stability_share >= STABLE_SHARE
        assert v.candidate != v.user_setting
    elif v.kind is Verdict.KEEP:
        assert v.ci_high >= 0 and v.stability_share >= STABLE_SHARE
        assert v.n_independent_holdout >= MIN_INDEPENDENT_HOLDOUT
    else:
        assert v.n_independent_holdout < MIN_INDEPENDENT_HOLDOUT or (
            v.stability_share is not None and v.stability_share < STABLE_SHARE
        )


def test_slider_like_regions_read_switch_to_fitted(settings):
    row = run_type(region_rows(SLIDER_LIKE, 12), settings)
    check_against_its_own_numbers(row)
    assert verdict_label(row) == "switch to fitted"
    sentence = comparison_sentence(row, T)
    assert "is closer than 'current', the setting you run" in sentence
    assert "in 5 of 5 splits" in sentence
    spread = row["fitted_spread"]
    assert spread["min_band_position"][0] <= spread["min_band_position"][1]


def test_regions_drawn_from_the_users_setting_read_keep_current(settings):
    row = run_type(region_rows(CURRENT, 12), settings)
    check_against_its_own_numbers(row)
    assert verdict_label(row) == "keep current"
    assert "no candidate is distinguishably closer than 'current'" in comparison_sentence(row, T)


def test_too_few_held_out_regions_read_not_enough_evidence(settings):
    row = run_type(region_rows(SLIDER_LIKE, 3), settings)  # 3 clips per ID, 1 or 2 held out
    check_against_its_own_numbers(row)
    v, n = row_verdict(row), row["n_holdout"]
    assert n < MIN_INDEPENDENT_HOLDOUT and v.n_independent_holdout == n
    # Every clip has a region and half are held out: 2 clips per missing held-out region.
    assert verdict_label(row) == "not enough evidence"
    assert v.clips_needed == 2 * (MIN_INDEPENDENT_HOLDOUT - n)
    sentence = comparison_sentence(row, T)
    assert f"no test: {n} independent held-out regions" in sentence
    assert "not distinguishable" not in sentence  # no test ran, so no such claim


def test_the_yardstick_cannot_tell_two_halves_of_the_same_regions_apart(settings):
    """Negative control: half of one set of regions posing as masks gives an AUC interval
    covering 0.5; a clearly different mask family gives an AUC near 1."""
    from analysis.artifacts import region_feature_arrays
    from analysis.yardstick import two_sample_auc

    real = region_feature_arrays(region_rows(SLIDER_LIKE, 30, seed=5))
    half = {c: v[::2] for c, v in real.items()}
    other = {c: v[1::2] for c, v in real.items()}
    control = two_sample_auc(half, other, N_MELS, T, settings, seed=0)
    assert control["ci_low"] <= 0.5 <= control["ci_high"], control
    assert control["n_regions"] == 30
    apart = two_sample_auc(presets()["current"], other, N_MELS, T, settings, seed=0)
    assert apart["auc"] > 0.9 and apart["ci_low"] > 0.5, apart
    assert (
        two_sample_auc(half, {c: v[:4] for c, v in other.items()}, N_MELS, T, settings, 0) is None
    )


def test_pooled_held_out_regions_promise_no_clip_count(settings):
    """An ID-level (pooled) region stands for many clips but counts once: more clips of the same
    IDs add no independent region, so no clip count is promised."""
    row = {
        "machine_type": "ToyCar",
        "machine_id": "all",
        "status": "ok",
        "n_anomaly": 16,
        "n_regions": 8,
        "n_holdout": 8,  # eight clips, one pooled region
        "_tests": [SplitTest("fitted", 1, -0.3, None)],
    }
    finalize_verdicts([row], settings)
    v = row_verdict(row)
    assert v.kind is Verdict.NOT_ENOUGH_EVIDENCE and v.clips_needed is None
    assert "pooled per ID" in v.reason
