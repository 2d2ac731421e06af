import os

import numpy as np
import pytest
import soundfile as sf

from analysis.audio import load_clip
from analysis.dcase import parse_clip_name
from analysis.extract import extract, merge_moments
from analysis.io import load_npz, read_csv, read_json
from analysis.mel import MelGeometry
from tests.conftest import tone_clip, write_tree


@pytest.fixture
def tree(tmp_path):
    root = write_tree(tmp_path / "data")
    rng = np.random.default_rng(5)
    test = root / "fan" / "test"
    # Odd but usable clips.
    stereo = np.stack([tone_clip(rng, 2.0, sr=44100), tone_clip(rng, 2.0, sr=44100)], axis=1)
    sf.write(test / "normal_id_00_00000100.wav", stereo, 44100)
    sf.write(test / "normal_id_00_00000101.wav", tone_clip(rng, 11.0), 16000, subtype="PCM_16")
    sf.write(test / "normal_id_00_00000102.wav", tone_clip(rng, 3.0), 16000, subtype="PCM_16")
    sf.write(test / "normal_id_02_00000103.wav", np.zeros(32000, dtype=np.float32), 16000)  # silent
    # Unusable ones.
    (test / "anomaly_id_00_00000200.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage")
    (test / "anomaly-id-00-7.wav").write_bytes(b"not even named right")
    sf.write(test / "anomaly_id_02_00000201.wav", tone_clip(rng, 0.5), 16000)
    sf.write(test / "anomaly_id_02_00000202.wav", np.zeros((0,), dtype=np.float32), 16000)
    sf.write(root / "fan" / "train" / "anomaly_id_00_00000009.wav", tone_clip(rng, 2.0), 16000)
    return root


def run(params, root, out, **features):
    params["features"].update(features)
    return extract(params, "fan", data_root=root, out_dir=out)


def test_contract_files_shapes_and_dtypes(params, tree, tmp_path):
    out = run(params, tree, tmp_path / "out", n_jobs=2)
    data = load_npz(out / "test.npz")
    n = data["logmel"].shape[0]
    assert data["logmel"].shape == (n, 128, 320) and data["logmel"].dtype == np.float32
    assert data["label"].dtype == np.int8 and set(data["label"].tolist()) == {0, 1}
    assert set(data["machine_id"].tolist()) == {"id_00", "id_02"}
    assert all(f.startswith("fan/test/") for f in data["file"].tolist())
    assert np.isfinite(data["logmel"]).all()
    stats = load_npz(out / "train_stats.npz")
    assert stats["mean"].shape == (128,) and stats["std"].dtype == np.float32
    assert int(stats["count"]) == 8 * MelGeometry().n_frames(32000)


def test_every_unusable_clip_is_listed_with_a_reason(params, tree, tmp_path):
    out = run(params, tree, tmp_path / "out")
    skipped = {row["file"]: row["reason"] for row in read_csv(out / "skipped.csv")}
    assert "corrupt" in skipped["fan/test/anomaly_id_00_00000200.wav"]
    assert "does not parse" in skipped["fan/test/anomaly-id-00-7.wav"]
    assert "shorter than 1 s" in skipped["fan/test/anomaly_id_02_00000201.wav"]
    assert (
        "empty" in skipped["fan/test/anomaly_id_02_00000202.wav"]
        or "corrupt" in skipped["fan/test/anomaly_id_02_00000202.wav"]
    )
    assert "anomaly clip in train" in skipped["fan/train/anomaly_id_00_00000009.wav"]
    used = set(load_npz(out / "test.npz")["file"].tolist())
    assert not used & set(skipped)
    assert skipped["fan/test/normal_id_02_00000103.wav"].startswith("silent clip")
    source = read_json(out / "source.json")
    assert source["n_skipped"] == len(skipped) == 6
    assert source["n_resampled"] == 1 and source["n_downmixed"] == 1


def test_odd_lengths_and_silence(params, tree, tmp_path):
    out = run(params, tree, tmp_path / "out")
    data = load_npz(out / "test.npz")
    files = data["file"].tolist()
    long_clip = files.index("fan/test/normal_id_00_00000101.wav")
    short_clip = files.index("fan/test/normal_id_00_00000102.wav")
    assert data["n_frames"][long_clip] == 320  # 11 s cropped
    frames_3s = MelGeometry().n_frames(48000)
    assert data["n_frames"][short_clip] == frames_3s
    # Padding is the train mean, i.e. exactly 0 after normalization.
    assert np.all(data["logmel"][short_clip][:, frames_3s:] == 0)
    # Digital silence holds no sound: skipped with its reason, not a zero-variance clip.
    assert "fan/test/normal_id_02_00000103.wav" not in files
    skipped = {r["file"]: r["reason"] for r in read_csv(out / "skipped.csv")}
    assert skipped["fan/test/normal_id_02_00000103.wav"] == "silent clip (every sample is 0)"


def test_normalization_over_train_frames(params, tree, tmp_path):
    out = run(params, tree, tmp_path / "out")
    stats = load_npz(out / "train_stats.npz")
    geometry = MelGeometry()
    train = sorted((tree / "fan" / "train").glob("normal_*.wav"))
    frames = np.concatenate(
        [geometry.log_mel(load_clip(p, 16000, 1.0).samples) for p in train], axis=1
    )
    z = (frames - stats["mean"][:, None]) / stats["std"][:, None]
    assert np.allclose(z.mean(axis=1), 0, atol=1e-4)
    assert np.allclose(z.std(axis=1), 1, atol=1e-3)


def test_matches_direct_librosa_to_1e_3_db(params, tree, tmp_path):
    out = run(params, tree, tmp_path / "out")
    data = load_npz(out / "test.npz")
    stats = load_npz(out / "train_stats.npz")
    i = data["file"].tolist().index("fan/test/anomaly_id_00_00000001.wav")
    reference = MelGeometry.from_params(params).librosa_log_mel(tree / data["file"][i])
    n = data["n_frames"][i]
    ours = (
        data["logmel"][i][:, :n] * np.maximum(stats["std"], 1e-3)[:, None] + stats["mean"][:, None]
    )
    assert np.max(np.abs(ours - reference[:, :n])) < 1e-3


def test_deterministic_and_independent_of_processes(params, tree, tmp_path):
    a = run(params, tree, tmp_path / "a", n_jobs=1)
    b = run(params, tree, tmp_path / "b", n_jobs=2)
    for name in ("test.npz", "train_stats.npz", "skipped.csv", "source.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_warns_when_an_id_lacks_anomalies(params, tmp_path):
    root = write_tree(tmp_path / "data", ids=("id_00",), n_anomaly=0)
    out = run(params, root, tmp_path / "out")
    assert "id_00 has no anomalous test clips" in read_json(out / "source.json")["warnings"]


def test_merge_moments_equals_direct():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 50)), rng.normal(2, 3, size=(3, 70))
    count, mean, m2 = merge_moments(
        50,
        a.mean(1),
        ((a - a.mean(1, keepdims=True)) ** 2).sum(1),
        70,
        b.mean(1),
        ((b - b.mean(1, keepdims=True)) ** 2).sum(1),
    )
    both = np.concatenate([a, b], axis=1)
    assert count == 120 and np.allclose(mean, both.mean(1)) and np.allclose(m2 / count, both.var(1))


def test_missing_layout_is_a_clear_error(params, tmp_path):
    from analysis.dcase import DataLayoutError

    (tmp_path / "data" / "fan" / "train").mkdir(parents=True)
    with pytest.raises(DataLayoutError, match="test"):
        extract(params, "fan", data_root=tmp_path / "data", out_dir=tmp_path / "out")


@pytest.mark.parametrize("mode", ["per_clip", "none", "train_per_bin"])
def test_normalization_modes_against_an_independent_computation(params, tmp_path, mode):
    """Each mode recomputed from the WAV with plain librosa (the DCASE-baseline log-mel)."""
    root = write_tree(tmp_path / "data", n_train=2, n_normal=2, n_anomaly=1, seconds=3.0)
    out = run(params, root, tmp_path / "out", normalization=mode, n_jobs=1)
    data = load_npz(out / "test.npz")
    stats = load_npz(out / "train_stats.npz")
    geometry = MelGeometry()
    i = data["file"].tolist().index("fan/test/normal_id_00_00000001.wav")
    raw = geometry.librosa_log_mel(root / "fan" / "test" / "normal_id_00_00000001.wav")
    n = raw.shape[1]  # 3 s: 94 frames, padded to 320
    got = data["logmel"][i]
    if mode == "per_clip":
        expected = (raw - raw.mean()) / raw.std()
        pad = 0.0
    elif mode == "none":
        expected, pad = raw, raw.mean()
    else:
        expected = (raw - stats["mean"][:, None]) / stats["std"][:, None]
        pad = 0.0
    assert np.allclose(got[:, :n], expected, atol=2e-3)
    assert np.allclose(got[:, n:], pad, atol=1e-4)


def test_train_clip_count_ignores_files_that_are_not_clips(params, tmp_path):
    root = write_tree(tmp_path / "data", n_train=4, n_normal=2, n_anomaly=1)
    train = root / "fan" / "train"
    (train / ".DS_Store").write_bytes(b"\0\1")
    (train / "._normal_id_00_00000000.wav").write_bytes(b"macOS resource fork")
    (train / "notes.txt").write_text("not a clip")
    out = run(params, root, tmp_path / "out", n_jobs=1)
    # 4 clips per ID, 2 IDs; the three junk files are listed as skipped but were never clips.
    assert int(load_npz(out / "train_stats.npz")["n_clips"]) == 8
    assert read_json(out / "source.json")["n_train_used"] == 8


def test_train_clip_count_subtracts_unreadable_clips_once(params, tmp_path):
    root = write_tree(tmp_path / "data", ids=("id_00",), n_train=1, n_normal=2, n_anomaly=1)
    train = root / "fan" / "train"
    (train / "normal_id_00_00000007.wav").write_bytes(b"RIFF broken")  # a clip name, unreadable
    for junk in (".DS_Store", "._a.wav", "anomaly_id_00_00000003.wav"):
        (train / junk).write_bytes(b"junk")
    out = run(params, root, tmp_path / "out", n_jobs=1)
    # One good train clip; the broken clip and the three junk files are all skipped.
    assert read_json(out / "source.json")["n_train_used"] == 1
    assert int(load_npz(out / "train_stats.npz")["n_clips"]) == 1


def test_names_that_are_not_utf8_are_skipped_and_listed(params, tmp_path):
    root = write_tree(tmp_path / "data", n_train=2, n_normal=2, n_anomaly=2)
    test_dir = os.fsencode(root / "fan" / "test")
    # A Latin-1 byte in a name: valid on a POSIX file system, not valid UTF-8.
    with open(os.path.join(test_dir, b"normal_id_00_0000\xe9001.wav"), "wb") as fh:
        fh.write(b"RIFF")
    out = run(params, root, tmp_path / "out", n_jobs=1)
    skipped = {row["file"]: row["reason"] for row in read_csv(out / "skipped.csv")}
    assert skipped == {"fan/test/normal_id_00_0000\\xe9001.wav": "file name is not valid UTF-8"}
    assert read_json(out / "source.json")["n_test_used"] == 8


def test_non_ascii_digits_do_not_make_a_clip_name():
    assert parse_clip_name("anomaly_id_00_00000012.wav") == (1, "id_00")
    assert (
        parse_clip_name("anomaly_id_00_\u0660\u0660\u0660\u0660\u0660\u0660\u0661\u0662.wav")
        is None
    )
    assert parse_clip_name("normal_id_\u0660\u0662_00000012.wav") is None
    assert (
        parse_clip_name("normal_id_00_\uff10\uff10\uff10\uff10\uff10\uff10\uff11\uff12.wav") is None
    )


def test_evaluation_set_names_are_skipped_with_their_reason_and_warned(params, tmp_path):
    root = write_tree(tmp_path / "data", n_train=2, n_normal=0, n_anomaly=0)
    for i in range(3):
        sf.write(
            root / "fan" / "test" / f"id_00_{i:08d}.wav",
            tone_clip(np.random.default_rng(i), 2.0),
            16000,
        )
    out = run(params, root, tmp_path / "out", n_jobs=1)
    reasons = [row["reason"] for row in read_csv(out / "skipped.csv")]
    assert len(reasons) == 3 and all("no normal/anomaly label" in r for r in reasons)
    warnings = read_json(out / "source.json")["warnings"]
    assert any("3 test files have evaluation-set names" in w for w in warnings), warnings


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
@pytest.mark.parametrize("channels", [1, 2])
def test_read_audio_returns_what_librosa_load_returns(tmp_path, subtype, channels):
    import librosa

    from analysis.audio import read_audio

    rng = np.random.default_rng(3)
    samples = np.clip(0.3 * rng.standard_normal((4000, channels)), -1, 1).squeeze()
    path = tmp_path / "clip.wav"
    sf.write(path, samples, 16000, subtype=subtype)
    ours, ours_sr, _ = read_audio(path)
    theirs, theirs_sr = librosa.load(path, sr=None, mono=False)
    assert ours_sr == theirs_sr == 16000
    assert ours.dtype == theirs.dtype == np.float32 and ours.shape == theirs.shape
    assert np.array_equal(ours, theirs)


def test_power_to_db_matches_librosa():
    import librosa

    from analysis.mel import power_to_db

    rng = np.random.default_rng(4)
    power = (rng.lognormal(0, 4, size=(16, 50)) * 1e-6).astype(np.float32)
    power[0, :3] = 0.0  # below amin
    expected = librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=80.0)
    got = power_to_db(power, amin=1e-10, top_db=80.0)
    assert got.dtype == expected.dtype
    assert np.allclose(got, expected, atol=1e-4, rtol=0)
    assert np.allclose(
        power_to_db(power, top_db=None), librosa.power_to_db(power, top_db=None), atol=1e-4
    )


def test_odd_files_get_a_reason_of_their_own(params, tmp_path):
    """A WAV cut short (its header promises more than it holds), a DC clip, a broken chunk,
    and an ID with test clips but no train clip: each gets a reason or a warning that says it."""
    root = write_tree(tmp_path / "data")
    rng = np.random.default_rng(9)
    test = root / "fan" / "test"
    sf.write(test / "normal_id_00_00000300.wav", tone_clip(rng, 10.0), 16000, subtype="PCM_16")
    whole = (test / "normal_id_00_00000300.wav").read_bytes()
    (test / "normal_id_00_00000300.wav").write_bytes(whole[: len(whole) // 2])
    sf.write(test / "normal_id_00_00000301.wav", np.full(32000, 0.25, np.float32), 16000)
    broken = bytearray((root / "fan" / "train").glob("*.wav").__next__().read_bytes())
    broken[36:40] = b"JUNK"  # the data chunk's id
    (test / "normal_id_00_00000302.wav").write_bytes(bytes(broken))
    sf.write(test / "normal_id_08_00000303.wav", tone_clip(rng, 2.0), 16000)  # no train clip
    out = run(params, root, tmp_path / "out")
    skipped = {r["file"]: r["reason"] for r in read_csv(out / "skipped.csv")}
    assert skipped["fan/test/normal_id_00_00000300.wav"] == (
        "truncated file: the header promises 10.00 s, the file holds 5.00 s"
    )
    assert skipped["fan/test/normal_id_00_00000301.wav"] == (
        "constant clip (every sample is 0.25: DC, no sound)"
    )
    assert skipped["fan/test/normal_id_00_00000302.wav"].startswith("unreadable or corrupt audio: ")
    assert "RuntimeError" not in skipped["fan/test/normal_id_00_00000302.wav"]
    warnings = read_json(out / "source.json")["warnings"]
    assert any(w.startswith("id_08 has test clips but no usable train clip") for w in warnings)


def test_extract_reads_only_the_frames_it_keeps(params, tmp_path):
    """A 60 s clip gives the same kept frames as its first part (the features crop to
    target_T): extract reads only geometry.kept_seconds of it."""
    root = write_tree(tmp_path / "data")
    rng = np.random.default_rng(3)
    long_clip = tone_clip(rng, 60.0)
    sf.write(
        root / "fan" / "test" / "normal_id_00_00000400.wav", long_clip, 16000, subtype="PCM_16"
    )
    geometry = MelGeometry()
    loaded = load_clip(
        root / "fan" / "test" / "normal_id_00_00000400.wav", 16000, 1.0, geometry.kept_seconds
    )
    assert loaded.samples.size == int(np.ceil(geometry.kept_seconds * 16000)) < 60 * 16000
    full = load_clip(root / "fan" / "test" / "normal_id_00_00000400.wav", 16000, 1.0)
    # The kept frames agree with the whole clip's (the dB floor may differ where the loudest
    # frame lies beyond them: these clips are stationary, so it does not).
    kept = geometry.log_mel(loaded.samples)[:, : geometry.target_T]
    whole = geometry.log_mel(full.samples)[:, : geometry.target_T]
    assert np.allclose(kept, whole, atol=1e-3)
