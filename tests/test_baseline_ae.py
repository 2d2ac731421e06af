"""The DCASE 2020 baseline autoencoder port: its input vectors, its feature and that it detects
what it should (a planted tone) and nothing where nothing is planted."""

import sys

import librosa
import numpy as np
import pytest

from analysis.baseline_ae import (
    BaselineAutoencoder,
    BaselineConfig,
    anomaly_scores,
    dcase_log_mel,
    frame_vectors,
    train_autoencoder,
)
from analysis.detection import auc


def test_frame_vectors_concatenate_consecutive_frames_frame_major():
    logmel = np.arange(3 * 7, dtype=np.float32).reshape(3, 7)  # 3 bins, 7 frames
    vectors = frame_vectors(logmel, n_frames=5)
    assert vectors.shape == (3, 15)
    # Vector t is frames t..t+4, each frame's 3 bins in turn (the baseline's layout).
    for t in range(3):
        expected = np.concatenate([logmel[:, t + k] for k in range(5)])
        np.testing.assert_array_equal(vectors[t], expected)
    assert frame_vectors(logmel[:, :4], n_frames=5).shape == (0, 15)


def test_feature_is_the_published_one():
    sr = 16000
    t = np.arange(sr) / sr
    y = (0.1 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=1024, hop_length=512, n_mels=128)
    expected = 10.0 * np.log10(mel + sys.float_info.epsilon)
    np.testing.assert_allclose(dcase_log_mel(y, sr), expected, rtol=1e-5, atol=1e-4)


def test_network_has_the_published_shape():
    model = BaselineAutoencoder(640)
    linear = [m for m in model.layers if m.__class__.__name__ == "Linear"]
    assert [m.out_features for m in linear] == [128, 128, 128, 128, 8, 128, 128, 128, 128, 640]


def _clips(rng, base, n, planted=0.0):
    bump = np.zeros((32, 1))
    bump[12:15] = planted
    return [base + rng.normal(size=(32, 60)) + bump for _ in range(n)]


@pytest.mark.parametrize("planted, expect_detected", [(4.0, True), (0.0, False)])
def test_detects_a_planted_band_and_nothing_when_nothing_is_planted(planted, expect_detected):
    rng = np.random.default_rng(1)
    base = rng.normal(size=(32, 1)) * 4
    cfg = BaselineConfig(n_mels=32, epochs=15, batch_size=256)
    model = train_autoencoder(_clips(rng, base, 60), cfg, device="cpu")
    normal = anomaly_scores(model, _clips(rng, base, 30))
    anomalous = anomaly_scores(model, _clips(rng, base, 30, planted))
    score = auc(normal, anomalous)
    if expect_detected:
        assert score > 0.95
    else:  # 30 vs 30 clips: an AUC's SD under the null is about 0.075
        assert 0.3 < score < 0.7


def test_training_is_seeded():
    rng = np.random.default_rng(2)
    clips = _clips(rng, rng.normal(size=(32, 1)), 10)
    cfg = BaselineConfig(n_mels=32, epochs=2, batch_size=64)
    a = anomaly_scores(train_autoencoder(clips, cfg, device="cpu"), clips[:3])
    b = anomaly_scores(train_autoencoder(clips, cfg, device="cpu"), clips[:3])
    np.testing.assert_array_equal(a, b)
