"""Odd data the way users bring it: short clips, constant clips, a full disk. Each case is built
here; the expected outcome comes from what was planted (a clear tone at 3 kHz, nothing at all)."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.extract import extract
from analysis.io import read_json
from analysis.localization.id_level import pooled_test, scale_maps, time_scales
from analysis.localize import localize
from analysis.mel import MelGeometry
from tests.conftest import write_tree


@pytest.mark.parametrize("seconds", [1.1, 5.0, 9.0, 10.0])
def test_a_clear_tone_is_found_at_the_clip_level_whatever_the_clip_length(
    params, tmp_path, seconds
):
    """Clips shorter than target_T frames are zero-padded; the padding must take part in no
    statistic. Before, a moving variance over the padded frames went slightly negative, its
    square root NaN, the calibrated threshold 0, and no region was ever found in 9 s clips."""
    root = write_tree(
        tmp_path / "data", ids=("id_00",), n_train=6, n_normal=10, n_anomaly=8, seconds=seconds
    )
    features = extract(params, "fan", data_root=root, out_dir=tmp_path / "features")
    out = localize(params, "fan", features_dir=features, out_dir=tmp_path / "loc")
    summary = read_json(out / "fan.json")
    assert summary["clip_threshold_abs_z"] > 0
    ids = summary["ids"]["id_00"]
    assert ids["n_real_frames"] == min(MelGeometry().n_frames(int(seconds * 16000)), 320)
    assert ids["n_regions_found"] == 8, ids  # every anomalous clip
    tone_bin = MelGeometry().hz_to_bin(3000.0)
    assert abs(ids["excess_peak_mel"] - tone_bin) <= 2
    assert summary["clip_false_region_rate"] <= 0.2


def test_identical_constant_clips_give_no_id_level_evidence(params):
    """Zero-variance clips (digital silence, DC) leave only float noise in Welch's t; a null of
    exact zeros must not turn that noise into a significant region."""
    loc = params["localization"]
    constant = np.full((12, 16, 40), -3.5)
    anomaly = constant[:6] + np.float64(1e-12)  # the same clips up to rounding
    scales = time_scales(loc, 40)
    x = {L: scale_maps(constant, loc["smooth_bins"], L) for L in scales}
    y = {L: scale_maps(anomaly, loc["smooth_bins"], L) for L in scales}
    result = pooled_test(x, y, (16, 40), loc, seed=0)
    assert result["p_value"] == 1.0 and not result["region"].any()


def test_a_full_disk_while_writing_wavs_names_the_file_and_the_cause(tmp_path):
    """A size limit below one WAV (as a full disk would) while synthesize writes its clips: the
    message names the clip and the cause (libsndfile's own was "System error."), and no
    partial data set is left behind."""
    import resource
    import subprocess
    import sys

    import yaml

    from tests.conftest import ROOT

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["machine_types"] = ["fan"]
    params["synthetic"].update(ids_per_type=1, train_clips_per_id=1)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))

    def small_files_only() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))  # a 10 s WAV is 320 kB

    out = tmp_path / "synthetic"
    result = subprocess.run(
        [sys.executable, "-m", "analysis", "--params", str(path), "synthesize", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        preexec_fn=small_files_only,
    )
    assert result.returncode == 4, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert "error: synthesize: cannot write" in message and ".wav: File too large" in message
    assert "System error" not in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_a_dangling_link_is_listed_by_extract_and_stops_check_params_by_name(params, tmp_path):
    from analysis.checks import check_data_root
    from analysis.io import read_csv
    from analysis.params import ParamsError

    root = write_tree(tmp_path / "data", ids=("id_00",), n_train=3, n_normal=3, n_anomaly=3)
    (root / "fan" / "test" / "normal_id_00_00000099.wav").symlink_to(tmp_path / "gone.wav")
    out = extract(params, "fan", data_root=root, out_dir=tmp_path / "features")
    skipped = {r["file"]: r["reason"] for r in read_csv(out / "skipped.csv")}
    assert skipped == {"fan/test/normal_id_00_00000099.wav": "a link to a file that does not exist"}
    # Under dvc repro the extract stage never runs (DVC cannot hash the link): the first stage
    # names the link instead.
    with pytest.raises(ParamsError, match=r"data.root: 1 link\(s\) .*normal_id_00_00000099.wav"):
        check_data_root({"root": str(root), "machine_types": ["fan"]})
