"""The DCASE 2020 Task 2 baseline autoencoder, as published, in torch.

The reference detector every DCASE reader knows; one implementation serves the synthetic data's
calibration (``benchmarks/bench_calibration.py``) and the downstream check's reference rows.
The published recipe (the task's baseline repository, ``00_train.py`` / ``01_test.py``):

- feature: librosa's mel spectrogram (n_fft 1024, hop 512, 128 bands, power 2, librosa's
  default Slaney filters), ``20 / power * log10(mel + eps)``, no normalization;
- input: 5 consecutive frames concatenated (640 values), one vector per frame offset;
- network: dense 128-128-128-128-8-128-128-128-128 with batch norm and ReLU after each, then a
  linear layer back to 640; MSE; Adam (lr 1e-3); batch 512; 100 epochs; the last 10 % of the
  vectors held out for validation (Keras' ``validation_split``), the rest shuffled each epoch;
- one model per machine type on all its train clips; a clip's score is the mean over its
  vectors of the mean squared reconstruction error.

Keras' batch norm (momentum 0.99, epsilon 1e-3) and Glorot-uniform dense weights are kept so
the port trains as the original does. Runs on CPU; uses a GPU where torch sees one.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class BaselineConfig:
    """The published recipe's settings; ``epochs`` is the one callers usually lower."""

    n_mels: int = 128
    n_frames: int = 5
    n_fft: int = 1024
    hop_length: int = 512
    power: float = 2.0
    epochs: int = 100
    batch_size: int = 512
    learning_rate: float = 1e-3
    validation_split: float = 0.1
    seed: int = 0

    @property
    def input_dim(self) -> int:
        return self.n_mels * self.n_frames


def dcase_log_mel(samples: np.ndarray, sr: int, cfg: BaselineConfig | None = None) -> np.ndarray:
    """The baseline's log-mel of one mono clip: ``(n_mels, frames)`` float32 in dB."""
    import librosa

    cfg = cfg or BaselineConfig()
    mel = librosa.feature.melspectrogram(
        y=np.asarray(samples, dtype=np.float32),
        sr=sr,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        n_mels=cfg.n_mels,
        power=cfg.power,
    )
    return (20.0 / cfg.power * np.log10(mel + sys.float_info.epsilon)).astype(np.float32)


def frame_vectors(logmel: np.ndarray, n_frames: int = 5) -> np.ndarray:
    """``(frames - n_frames + 1, n_mels * n_frames)``: every run of ``n_frames`` consecutive
    frames, frame-major as the baseline concatenates them (frame t's bins, then t+1's, ...)."""
    n_mels, n_cols = logmel.shape
    n_vectors = n_cols - n_frames + 1
    if n_vectors < 1:
        return np.empty((0, n_mels * n_frames), dtype=np.float32)
    out = np.empty((n_vectors, n_mels * n_frames), dtype=np.float32)
    for t in range(n_frames):
        out[:, n_mels * t : n_mels * (t + 1)] = logmel[:, t : t + n_vectors].T
    return out


class BaselineAutoencoder(torch.nn.Module):
    """Dense 640-128-128-128-128-8-128-128-128-128-640, batch norm and ReLU after every hidden
    layer (about 270,000 parameters)."""

    def __init__(self, input_dim: int = 640) -> None:
        super().__init__()
        widths = [input_dim, 128, 128, 128, 128, 8, 128, 128, 128, 128]
        layers: list[torch.nn.Module] = []
        for n_in, n_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                torch.nn.Linear(n_in, n_out),
                torch.nn.BatchNorm1d(n_out, eps=1e-3, momentum=0.01),
                torch.nn.ReLU(),
            ]
        layers.append(torch.nn.Linear(widths[-1], input_dim))
        self.layers = torch.nn.Sequential(*layers)
        for module in self.layers:
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.xavier_uniform_(module.weight)
                torch.nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _device(device: str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train_autoencoder(
    train_logmels: Sequence[np.ndarray],
    cfg: BaselineConfig | None = None,
    device: str | None = None,
) -> BaselineAutoencoder:
    """One model trained on the frame vectors of ``train_logmels`` (normal clips of one machine
    type, each ``(n_mels, frames)``), as the published recipe trains it; seeded by ``cfg.seed``.

    The vectors keep the clips' order; the last ``validation_split`` of them is held out as
    Keras does (and only that: no early stopping uses it), the rest shuffled every epoch.
    """
    cfg = cfg or BaselineConfig()
    dev = _device(device)
    vectors = np.concatenate([frame_vectors(m, cfg.n_frames) for m in train_logmels])
    n_train = len(vectors) - int(len(vectors) * cfg.validation_split)
    if n_train < 2:
        raise ValueError(f"too few train vectors for the baseline autoencoder ({len(vectors)})")
    data = torch.from_numpy(vectors[:n_train]).to(dev)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = BaselineAutoencoder(cfg.input_dim).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, eps=1e-7)
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(n_train, generator=gen).to(dev)
        for start in range(0, n_train, cfg.batch_size):
            batch = data[order[start : start + cfg.batch_size]]
            if len(batch) < 2:  # batch norm needs two rows; Keras would use the one row alone
                continue
            loss = torch.mean((model(batch) - batch) ** 2)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    return model


@torch.no_grad()
def anomaly_scores(
    model: BaselineAutoencoder, logmels: Sequence[np.ndarray], n_frames: int = 5
) -> np.ndarray:
    """Each clip's score: the mean over its frame vectors of the mean squared reconstruction
    error (higher = more anomalous); NaN for a clip shorter than ``n_frames``."""
    model.eval()
    dev = next(model.parameters()).device
    out = np.empty(len(logmels), dtype=np.float64)
    for k, logmel in enumerate(logmels):
        vectors = frame_vectors(logmel, n_frames)
        if len(vectors) == 0:
            out[k] = float("nan")
            continue
        x = torch.from_numpy(vectors).to(dev)
        errors = torch.mean((model(x) - x) ** 2, dim=1)
        out[k] = float(errors.mean().cpu())
    return out
