"""The proxy detector and its metrics: AUC / pAUC / rank correlation by reasoning, and planted
data where masks of the planted shape must train the better detector."""

import numpy as np
import pytest

from analysis.detection import (
    ClipLabels,
    auc,
    bootstrap_metrics,
    closeness_sentence,
    interval,
    pauc,
    per_id_standardize,
    spearman,
    type_metrics,
    validity,
    zscore_scores,
)
from analysis.strategies.factory import build_strategy


def test_auc_and_pauc_of_known_rankings():
    normal, anomalous = np.array([0.1, 0.2, 0.3]), np.array([0.4, 0.5])
    assert auc(normal, anomalous) == 1.0 and pauc(normal, anomalous) == pytest.approx(1.0)
    assert auc(anomalous, normal) == 0.0
    # All anomalous below all normal: partial area 0, McClish: 0.5 (1 + (0 - 0.005) / 0.095).
    assert pauc(anomalous, normal) == pytest.approx(0.5 * (1 - 0.005 / 0.095))
    assert auc(np.zeros(4), np.zeros(3)) == 0.5  # ties count half
    # One anomalous clip above 9 of 10 normal ones, one below all: the ROC rises to 0.5 at
    # FPR 0.1, so the area up to 0.1 is 0.5 * 0.1 (a step at FPR 0.1 adds nothing before it).
    normal = np.arange(10.0)
    anomalous = np.array([8.5, -1.0])
    area = 0.0  # TPR is 0 until FPR reaches 0.1 (the normal clip at 9 ranks first)
    assert pauc(normal, anomalous) == pytest.approx(0.5 * (1 + (area - 0.005) / 0.095))
    assert auc(normal, anomalous) == pytest.approx((9 + 0) / 20)


def test_spearman_and_the_sentence():
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 1, 2]) == pytest.approx(-0.5)
    assert np.isnan(spearman([1, 2], [1, 2]))
    assert closeness_sentence(0.2, 0.9, 3, 40) == "closer masks trained better detectors here"
    assert closeness_sentence(-0.5, 0.5, 3, 40) == "not distinguishable with 40 test clips"
    assert "did not" in closeness_sentence(-1.0, -0.5, 3, 40)


H, W = 16, 40  # the grid the detector sees (a 64 x 160 spectrogram, factor 4)
N_TRAIN, N_TEST = 60, 50


def planted(rng, n: int, anomalous: bool) -> np.ndarray:
    """Normal clips: a fixed spectral profile plus unit noise (cell SD 1). Anomalies: +1.5 SD
    in a band of 2 rows in three segments of 4 columns: short segments in a narrow band,
    weaker than one cell's noise, so a detector must pool over the anomaly's shape."""
    profile = np.linspace(-1, 1, H)[:, None]
    x = profile + rng.standard_normal((n, H, W))
    if anomalous:
        for clip in x:
            row = rng.integers(2, H - 4)
            for start in rng.choice(np.arange(0, W - 4, 5), size=3, replace=False):
                clip[row : row + 2, start : start + 4] += 1.5
    return x.astype(np.float32)


MATCHED = {  # narrow bands, a few short segments: the planted shape
    "kind": "audio_specific",
    "min_band_fraction": 0.08,
    "max_band_fraction": 0.14,
    "min_segments": 2,
    "max_segments": 4,
    "min_seg_len": 12,
    "max_seg_len": 20,
}
MISMATCHED = {  # wide bands over the whole clip
    "kind": "audio_specific",
    "min_band_fraction": 0.5,
    "max_band_fraction": 0.9,
    "full_time_prob": 1.0,
}
SEEDS = (1, 2, 3)


def train_and_score(setting, train, test_sets, seed, ignore_masks=False):
    """Train as the stage does (the setting's strategy on the grid) and score test sets;
    ``ignore_masks`` trains on unperturbed items with empty targets (the break to catch)."""
    from analysis.proxy import ProxyConfig, clip_scores, train_detector

    strategy = build_strategy(setting, (4 * H, 4 * W), q_shape=(H, W), seed=seed)
    cfg = ProxyConfig(steps=250, batch_size=8, perturbation="additive", additive_sd=(1.0, 2.0))

    def draw(b):
        masks = strategy(b, "cpu")
        return masks * 0 if ignore_masks else masks

    model = train_detector(train, np.ones(len(train), np.float32), draw, cfg, seed)
    return [clip_scores(model, g, np.full(len(g), W), cfg.score_quantile) for g in test_sets]


@pytest.fixture(scope="module")
def planted_run():
    rng = np.random.default_rng(0)
    train = planted(rng, N_TRAIN, False)
    with_anomalies = np.concatenate([planted(rng, N_TEST, False), planted(rng, N_TEST, True)])
    without = np.concatenate([planted(rng, N_TEST, False), planted(rng, N_TEST, False)])
    labels = ClipLabels(np.repeat([0, 1], N_TEST), np.array(["id_00"] * 2 * N_TEST))
    scores = {}
    for name, setting in (("matched", MATCHED), ("mismatched", MISMATCHED)):
        per_seed = [train_and_score(setting, train, [with_anomalies, without], s) for s in SEEDS]
        scores[name] = [np.stack([p[i] for p in per_seed]) for i in (0, 1)]
    return scores, labels, train, with_anomalies


def mean_auc(per_seed, labels) -> float:
    return float(np.mean([type_metrics(s, labels)[0] for s in per_seed]))


def test_masks_of_the_planted_shape_train_the_better_detector(planted_run):
    scores, labels, _, _ = planted_run
    with_anomalies = {name: pair[0] for name, pair in scores.items()}
    boot = bootstrap_metrics(with_anomalies, labels, 200, seed=0)
    matched = mean_auc(with_anomalies["matched"], labels)
    mismatched = mean_auc(with_anomalies["mismatched"], labels)
    low, high = interval(boot["matched"][:, 0] - boot["mismatched"][:, 0], 0.9)
    assert matched > 0.8 and low > 0, (matched, mismatched, low, high)


def test_without_anomalies_the_auc_interval_covers_chance(planted_run):
    scores, labels, _, _ = planted_run
    boot = bootstrap_metrics({name: pair[1] for name, pair in scores.items()}, labels, 200, seed=0)
    for name in scores:
        low, high = interval(boot[name][:, 0], 0.9)
        assert low < 0.5 < high, (name, low, high)


def test_a_detector_trained_without_masks_loses_the_advantage(planted_run):
    """The planted check fails when training ignores the masks: the matched setting's
    detector is then no better than the mismatched one's."""
    scores, labels, train, with_anomalies = planted_run
    blind = np.stack(
        [train_and_score(MATCHED, train, [with_anomalies], s, ignore_masks=True)[0] for s in SEEDS]
    )
    boot = bootstrap_metrics(
        {"blind": blind, "mismatched": scores["mismatched"][0]}, labels, 200, 0
    )
    low, _ = interval(boot["blind"][:, 0] - boot["mismatched"][:, 0], 0.9)
    assert low <= 0 and mean_auc(blind, labels) < 0.8


# ------------------------------------------------------------ validity: per-ID normalization


def two_ids(rng, n: int, anomalous: bool, size: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """Clips (n per ID, 24 bins x 40 frames, unit noise) of two IDs whose spectra differ by
    far more than the anomaly: id_00 lies 3 below the pooled mean in bins 4-11 and 3 above it
    in bins 12-19, id_01 the other way round. An anomaly adds ``size`` (sub-dB against an
    offset of 3) to bins 4-11 for the whole clip."""
    offset = np.zeros((2, 24, 1))
    offset[0, 4:12], offset[0, 12:20] = -3.0, 3.0
    offset[1] = -offset[0]
    x = offset.repeat(n, axis=0) + rng.standard_normal((2 * n, 24, 40))
    if anomalous:
        x[:, 4:12] += size
    return x.astype(np.float32), np.repeat(["id_00", "id_01"], n)


def test_pooled_statistics_turn_a_sub_db_anomaly_below_chance():
    """The cause of ToyCar's below-chance AUC, on planted data: against statistics pooled
    over IDs, id_00's anomaly band sits 3 below the mean, so adding 0.7 there lowers its z²
    ((-3 + 0.7)² < 3²): the anomalous clips look more normal. Against its own ID, the same
    anomaly raises every z² in the band. (Broke: per_id_standardize returning its input
    unchanged -> the per-ID AUC falls below 0.5 too.)"""
    rng = np.random.default_rng(1)
    train, train_ids = two_ids(rng, 30, False)
    normal, ids = two_ids(rng, 30, False)
    anomalous, _ = two_ids(rng, 30, True)
    test = np.concatenate([normal, anomalous])
    test_ids = np.concatenate([ids, ids])
    labels = np.repeat([0, 1], len(ids))
    frames = np.full(len(test), 40)
    pooled = zscore_scores(train, np.zeros(len(train)), test, np.zeros(len(test)), frames)
    own = zscore_scores(train, train_ids, test, test_ids, frames)
    on_00 = test_ids == "id_00"
    assert auc(pooled[on_00 & (labels == 0)], pooled[on_00 & (labels == 1)]) < 0.2
    assert auc(own[on_00 & (labels == 0)], own[on_00 & (labels == 1)]) > 0.9
    # The same through per-ID standardization (the proxy's input): pooled z² of the
    # standardized clips is then the per-ID z² and ranks right.
    train_std, test_std = per_id_standardize(train, train_ids, test, test_ids)
    after = zscore_scores(train_std, np.zeros(len(train)), test_std, np.zeros(len(test)), frames)
    assert auc(after[on_00 & (labels == 0)], after[on_00 & (labels == 1)]) > 0.9


def test_per_id_standardize_removes_each_ids_offset_and_leaves_unknown_ids():
    rng = np.random.default_rng(2)
    train, ids = two_ids(rng, 20, False)
    test = np.ones((1, 24, 40), np.float32) * 5
    train_std, test_std = per_id_standardize(train, ids, test, np.array(["id_09"]))
    for mid in ("id_00", "id_01"):
        rows = train_std[ids == mid]
        assert np.allclose(rows.mean(axis=(0, 2)), 0, atol=1e-5)
        assert np.allclose(rows.std(axis=(0, 2)), 1, atol=1e-4)
    assert np.array_equal(test_std, test)  # no train clips of id_09: left as is


def test_zscore_detector_by_reasoning():
    """A clip 2 SD above its ID's train mean in every bin scores 4 (mean z²); frames past
    ``n_frames`` (padding) do not count."""
    train = np.stack([np.full((3, 10), v, np.float32) for v in (-1.0, 1.0)])  # mean 0, SD 1
    test = np.full((1, 3, 12), 2.0, np.float32)
    test[0, :, 10:] = 100.0  # padding
    score = zscore_scores(train, np.array(["a", "a"]), test, np.array(["a"]), np.array([10]))
    assert score[0] == pytest.approx(4.0)


def test_donors_come_from_the_items_own_id():
    from analysis.proxy import donor_groups

    start, size = donor_groups(np.array(["a", "a", "a", "b", "b"]))
    assert start.tolist() == [0, 0, 0, 3, 3] and size.tolist() == [3, 3, 3, 2, 2]
    with pytest.raises(ValueError, match="sorted"):
        donor_groups(np.array(["b", "a"]))


def row(auc_value, low, high):
    return {"auc": auc_value, "auc_ci": [low, high]}


def test_validity_rule():
    """Below chance everywhere, or a reference far better than every proxy: not valid.
    (Broke: the reference clause removed -> the second case reads valid and fails.)"""
    below = {"a": row(0.3, 0.2, 0.45), "b": row(0.35, 0.25, 0.49)}
    assert validity(below, {}) == (False, validity(below, {})[1])
    assert "below 0.5" in validity(below, {})[1]
    proxies = {"a": row(0.6, 0.5, 0.7), "b": row(0.62, 0.52, 0.72)}
    ok, why = validity(proxies, {"baseline_ae": row(0.9, 0.85, 0.95)})
    assert not ok and "baseline autoencoder does far better" in why and "0.90 vs" in why
    # A reference better by less than FAR_AUC_MARGIN, or whose interval overlaps: valid.
    assert validity(proxies, {"zscore": row(0.75, 0.73, 0.8)})[0]
    assert validity(proxies, {"zscore": row(0.9, 0.7, 0.95)})[0]
    one_above = {"a": row(0.3, 0.2, 0.45), "b": row(0.45, 0.3, 0.55)}
    assert validity(one_above, {})[0]


def grid_two_ids(rng, n: int, anomalous: bool) -> tuple[np.ndarray, np.ndarray]:
    """Grid clips (H x W, unit noise) of two IDs 3 apart in opposite directions in rows 3-7
    and 8-12; anomalies: +1.5 in 2 rows within rows 3-6, three segments of 4 columns (the
    planted shape of ``planted``), so id_00's anomaly moves it towards id_01's spectrum."""
    offset = np.zeros((2, H, 1))
    offset[0, 3:8], offset[0, 8:13] = -3.0, 3.0
    offset[1] = -offset[0]
    x = offset.repeat(n, axis=0) + rng.standard_normal((2 * n, H, W))
    if anomalous:
        for clip in x:
            row = rng.integers(3, 6)
            for start in rng.choice(np.arange(0, W - 4, 5), size=3, replace=False):
                clip[row : row + 2, start : start + 4] += 1.5
    return x.astype(np.float32), np.repeat(["id_00", "id_01"], n)


def test_the_proxy_learns_the_anomaly_only_with_per_id_standardization():
    """The proxy, trained with masks of the planted shape on two IDs whose offsets are twice
    the anomaly: on data normalized with pooled statistics (the old way; donors from any ID)
    it scores near or below chance on an ID, standardized per ID (the stage's way) it finds
    the anomalies. (Broke: the stage's way without per_id_standardize -> fails.)"""
    from analysis.detection import cell_sd_per_clip
    from analysis.proxy import ProxyConfig, clip_scores, train_detector

    rng = np.random.default_rng(0)
    train, train_ids = grid_two_ids(rng, 30, False)
    normal, ids = grid_two_ids(rng, 25, False)
    anomalous, _ = grid_two_ids(rng, 25, True)
    test, test_ids = np.concatenate([normal, anomalous]), np.concatenate([ids, ids])
    labels = ClipLabels(np.repeat([0, 1], len(ids)), test_ids)
    cfg = ProxyConfig(perturbation="additive", additive_sd=(1.0, 2.0))
    mean_auc_of = {}
    for way in ("pooled", "per_id"):
        a, b, groups = train, test, None
        if way == "per_id":
            (a, b), groups = per_id_standardize(train, train_ids, test, test_ids), train_ids
        per_seed = []
        for seed in SEEDS:
            strategy = build_strategy(MATCHED, (4 * H, 4 * W), q_shape=(H, W), seed=seed)
            model = train_detector(
                a,
                cell_sd_per_clip(a, train_ids),
                lambda k, s=strategy: s(k, "cpu"),
                cfg,
                seed,
                groups,
            )
            per_seed.append(clip_scores(model, b, np.full(len(b), W), cfg.score_quantile))
        mean_auc_of[way] = mean_auc(per_seed, labels)
    assert mean_auc_of["pooled"] < 0.7 and mean_auc_of["per_id"] > 0.9, mean_auc_of


def test_page_one_combines_closeness_and_training():
    """'switch' only where training agrees; a wrong-side interval reads 'disagree'; no valid
    result: closeness alone and the command. (Broke: 'switch' kept when training is not
    distinguishable -> fails.)"""
    from analysis.detection import TrainingResult, combined_verdict

    cmd = "dvc exp run -S downstream.enabled=true"
    up, down = TrainingResult(0.08, (0.02, 0.14)), TrainingResult(-0.08, (-0.14, -0.02))
    flat = TrainingResult(0.01, (-0.05, 0.07))
    assert combined_verdict("switch", up, cmd)[0] == "switch"
    assert "+0.080 [+0.020, +0.140]" in combined_verdict("switch", up, cmd)[1]
    assert combined_verdict("switch", down, cmd)[0] == "closeness and training disagree"
    assert combined_verdict("switch", flat, cmd)[0] == "not enough evidence"
    assert combined_verdict("keep", up, cmd)[0] == "closeness and training disagree"
    assert combined_verdict("keep", down, cmd)[0] == "keep"
    verdict, words = combined_verdict("switch", None, cmd)
    assert verdict == "switch" and "closeness alone" in words and cmd in words
    invalid = TrainingResult(0.2, (0.1, 0.3), valid=False, invalid_reason="below chance")
    assert combined_verdict("switch", invalid, cmd) == (
        "switch",
        "closeness alone: check not valid (below chance)",
    )


def test_summary_gives_page_one_the_fitted_vs_user_difference_and_validity():
    """Planted scores: the fitted setting's detector ranks every anomaly first, the user's
    setting ('current') ranks at chance, so fitted − current is about +0.5 with an interval
    above 0, and with closeness saying switch, page 1 says switch. A z-score reference far
    above every proxy instead makes the type invalid, and page 1 rests on closeness alone.
    (Broke: the difference taken as current − fitted -> 'disagree' and the test fails.)"""
    from analysis.detection import combined_verdict, training_result
    from analysis.downstream import summarize_type

    rng = np.random.default_rng(3)
    labels = ClipLabels(np.repeat([0, 1], 40), np.tile(["id_00", "id_01"], 40))
    perfect = labels.label + 0.1 * rng.random(80)
    chance = rng.random((2, 80))
    scores = {"current": chance, "training_today": chance[::-1], "fitted": np.stack([perfect] * 2)}
    cfg = {"ci_level": 0.9, "n_bootstrap": 100, "seed": 0}
    masks = {"current": 0.5, "training_today": 0.4, "fitted": 0.1}
    summary = summarize_type(scores, {}, labels, masks, cfg)
    found = training_result(summary)
    assert found.auc_difference > 0.3 and found.ci[0] > 0 and summary["valid"]
    assert combined_verdict("switch", found, "cmd")[0] == "switch"
    weak = {n: rng.random((2, 80)) for n in scores}  # every proxy at chance
    summary = summarize_type(weak, {"zscore": np.stack([perfect])}, labels, masks, cfg)
    assert not summary["valid"] and "z-score does far better" in summary["invalid_reason"]
    assert "closeness alone" in combined_verdict("switch", training_result(summary), "cmd")[1]
    assert training_result(None) is None


def test_page_one_line_from_the_verdict_record_and_downstream_json():
    """report.training_line reads i31's typed verdict and the downstream record: a switch
    to fitted that training contradicts reads 'closeness and training disagree' with the
    training numbers; a type the check did not run for rests on closeness alone; a check that
    did not run gives the command. (Broke: candidate ignored, 'current' looked up -> fails.)"""
    from analysis.artifacts import DownstreamRecord, Verdict, VerdictRecord
    from analysis.report import training_line

    verdict = VerdictRecord(
        Verdict.SWITCH, "fitted", "current", -0.1, -0.2, -0.05, 0.95, 1.0, 5, 8, ""
    )
    row = {"machine_type": "fan", "verdict": verdict.to_json()}
    worse = {"minus_user_setting": {"fitted": {"auc_difference": -0.2, "ci": [-0.3, -0.1]}}}
    record = DownstreamRecord(
        True, "cmd", types={"fan": {**worse, "valid": True, "invalid_reason": ""}}
    )
    line = training_line(row, record)
    assert line["verdict"] == "closeness and training disagree" and line["changed"]
    assert "proxy AUC -0.200 [-0.300, -0.100]" in line["words"]
    other = training_line({**row, "machine_type": "pump"}, record)
    assert other["verdict"] == "switch" and "no result for this type" in other["words"]
    off = training_line(row, DownstreamRecord(False, "cmd"))
    assert (
        off["verdict"] == "switch" and "closeness alone" in off["words"] and "cmd" in off["words"]
    )


def test_page_one_names_the_trend_only_where_the_check_is_valid_and_a_shape_was_named():
    """Page 1's training cell stays short: the dose-response shape over the ranked settings
    where the type's check is valid; nothing where it is invalid (page 1 does not use it),
    where no shape was named (fewer than 3 settings) or where the check did not run.
    (Broke: validity not checked -> an invalid type's trend shows and the test fails.)"""
    from analysis.artifacts import DownstreamRecord, Verdict, VerdictRecord
    from analysis.report import training_line, trend_words

    ranked = {"rho": 0.9, "ci": [0.2, 1.0], "settings": ["a", "b", "c", "d"]}
    valid = {"valid": True, "rank_correlation": {**ranked, "shape": "peaked"}}
    assert trend_words(valid) == "AUC vs closeness, 4 settings: peaked"
    assert trend_words({**valid, "valid": False}) == ""
    assert trend_words({"valid": True, "rank_correlation": ranked}) == ""  # no shape named
    assert trend_words(None) == ""
    verdict = VerdictRecord(Verdict.KEEP, None, "current", 0.0, -0.1, 0.1, 0.95, 1.0, 5, 8, "")
    row = {"machine_type": "fan", "verdict": verdict.to_json()}
    record = DownstreamRecord(True, "cmd", types={"fan": {**valid, "invalid_reason": ""}})
    assert training_line(row, record)["trend"].endswith("peaked")
    assert training_line(row, DownstreamRecord(False, "cmd", types={"fan": valid}))["trend"] == ""


def test_a_ranking_on_too_few_held_out_regions_is_not_distinguishable_whatever_rho_says():
    """The settings' mask scores resting on 1 independent held-out region have no interval of
    their own, so a ρ interval below 0 must not become "closer trained worse": the sentence
    says not distinguishable and page 1 names no shape. At 5 regions the sentence stands; an
    invalid type keeps its reason. (Broke: the threshold compared with > instead of < -> the
    1-region case keeps "trained worse" and the test fails.)"""
    from analysis.downstream_summary import rank_only_with_regions
    from analysis.report import trend_words

    def summary(valid: bool = True) -> dict:
        ranked = {"rho": -0.5, "ci": [-0.6, -0.1], "settings": list("abcd"), "shape": "peaked"}
        sentence = "closer masks did not train better detectors here (they trained worse)"
        return {"valid": valid, "rank_correlation": ranked, "sentence": sentence}

    few = summary()
    rank_only_with_regions(few, 1, 5)
    assert few["sentence"] == (
        "not distinguishable: the settings' closeness rests on 1 independent held-out region "
        "(a ranking needs 5)"
    )
    assert (
        few["rank_correlation"]["held_out_regions"] == 1 and not few["rank_correlation"]["ranked"]
    )
    assert "peaked" not in trend_words(few) and "not ranked" in trend_words(few)
    enough = summary()
    rank_only_with_regions(enough, 5, 5)
    assert "trained worse" in enough["sentence"] and trend_words(enough).endswith("peaked")
    invalid = {**summary(False), "sentence": "not valid for this type: below chance"}
    rank_only_with_regions(invalid, 1, 5)
    assert invalid["sentence"] == "not valid for this type: below chance"


def test_page_one_names_the_settings_it_compares_and_why_nothing_was_trained():
    """The training cell says which difference it shows ("fitted − current"); a type with no
    fit says there was no fitted setting to train, not that "no candidate was trained".
    (Broke: the user's setting not read from the record -> "fitted − None" and fails.)"""
    from analysis.artifacts import DownstreamRecord, Verdict, VerdictRecord
    from analysis.report import training_line

    switch = VerdictRecord(
        Verdict.SWITCH, "fitted", "current", -0.1, -0.2, -0.05, 0.95, 1.0, 5, 8, ""
    )
    lacking = VerdictRecord(
        Verdict.NOT_ENOUGH_EVIDENCE, None, "current", None, None, None, 0.95, None, 0, 30, ""
    )
    found = {"minus_user_setting": {"fitted": {"auc_difference": 0.1, "ci": [0.05, 0.15]}}}
    types = {
        "fan": {**found, "valid": True, "invalid_reason": "", "user_setting": "current"},
        "valve": {"minus_user_setting": {}, "valid": True, "invalid_reason": ""},
    }
    record = DownstreamRecord(True, "cmd", types=types)
    fan = training_line({"machine_type": "fan", "verdict": switch.to_json()}, record)
    assert fan["words"].startswith("closeness and training agree (training, fitted − current: ")
    valve = {"machine_type": "valve", "status": "not enough evidence"}
    line = training_line({**valve, "verdict": lacking.to_json()}, record)
    assert line["words"] == "closeness alone: no fitted setting to train"
