"""Mel geometry and the detector's log-mel feature, in one place.

The detector this analysis serves uses 16 kHz mono, an STFT with ``n_fft`` /
``hop_length``, an HTK mel filter bank without filter normalization, power 2,
then ``10*log10`` floored ``top_db`` below the clip's maximum. Everything that
converts between mel bins and Hz, frames and seconds, or spectrogram and
quantized grids goes through :class:`MelGeometry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from analysis.io import load_npz, save_npz

# The pipeline's first stage (check_params) writes the librosa-made filter bank here. Stages
# read it instead of importing librosa (about 2 s of imports in every stage process).
MEL_TABLE_PATH = Path("build/mel_filters.npz")


DB_PER_NEPER_POWER = np.float32(10.0 / np.log(10.0))  # 10 log10(x) = this * ln(x)


def power_to_db(power: np.ndarray, amin: float = 1e-10, top_db: float | None = 80.0) -> np.ndarray:
    """``librosa.power_to_db(power, ref=1.0, amin=amin, top_db=top_db)`` without importing librosa.

    Three lines of numpy (the tests compare it with librosa's); importing librosa's
    spectrum module would cost the extract stage about 2 s per process. ``10 / ln 10 *
    ln`` rather than ``10 * log10``: numpy's float32 natural log is vectorized, 4x faster,
    and the two differ by about 1e-5 dB.
    """
    db = DB_PER_NEPER_POWER * np.log(np.maximum(amin, power))
    return np.maximum(db, db.max() - top_db) if top_db is not None else db


def empty_mel_filters(basis: np.ndarray) -> list[int]:
    """Mel rows whose triangle catches no FFT bin (all zero): constant, useless rows."""
    return [i for i, row in enumerate(basis) if not row.any()]


@dataclass(frozen=True)
class MelGeometry:
    sr: int = 16000
    n_fft: int = 1024
    hop_length: int = 512
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float = 8000.0
    power: float = 2.0
    top_db: float = 80.0
    target_T: int = 320

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> MelGeometry:
        f = params["features"]
        return cls(**{k: f[k] for k in cls.__dataclass_fields__})

    @property
    def spectrogram_shape(self) -> tuple[int, int]:
        return (self.n_mels, self.target_T)

    def q_shape(self, factor: int) -> tuple[int, int]:
        """The quantized grid of a ``factor``-times downsampling encoder (q_bot: 4, q_top: 8)."""
        return (max(1, self.n_mels // factor), max(1, self.target_T // factor))

    @property
    def table_key(self) -> np.ndarray:
        """What the filter bank depends on, stored with it to tell a stale table."""
        return np.array([self.sr, self.n_fft, self.n_mels, self.fmin, self.fmax], dtype=np.float64)

    def compute_mel_table(self) -> dict[str, np.ndarray]:
        """The filter bank and the band edges, made by librosa (HTK, no area normalization)."""
        import librosa

        basis = librosa.filters.mel(
            sr=self.sr,
            n_fft=self.n_fft,
            n_mels=self.n_mels,
            fmin=self.fmin,
            fmax=self.fmax,
            htk=True,
            norm=None,
        ).astype(np.float32)
        edges = librosa.mel_frequencies(
            n_mels=self.n_mels + 2, fmin=self.fmin, fmax=self.fmax, htk=True
        )
        return {"key": self.table_key, "basis": basis, "mel_edges_hz": edges}

    def write_mel_table(self, path: str | Path = MEL_TABLE_PATH) -> None:
        save_npz(path, **self.compute_mel_table())

    @cached_property
    def _mel_table(self) -> dict[str, np.ndarray]:
        """The stored table when it was made for this geometry, else librosa's, computed now."""
        if MEL_TABLE_PATH.is_file():
            stored = load_npz(MEL_TABLE_PATH)
            if np.array_equal(stored.get("key"), self.table_key):
                return stored
        return self.compute_mel_table()

    @cached_property
    def mel_basis(self) -> np.ndarray:
        """(n_mels, 1 + n_fft // 2) HTK filter bank, no area normalization (librosa's)."""
        return self._mel_table["basis"]

    @cached_property
    def bin_centres_hz(self) -> np.ndarray:
        """Centre frequency of each mel filter (Hz)."""
        return self._mel_table["mel_edges_hz"][1:-1]

    @cached_property
    def bin_edges_hz(self) -> np.ndarray:
        """Lower and upper edge (Hz) of each mel filter's triangle, shape (n_mels, 2)."""
        edges = self._mel_table["mel_edges_hz"]
        return np.stack([edges[:-2], edges[2:]], axis=1)

    def bin_to_hz(self, mel_bin: float | np.ndarray) -> float | np.ndarray:
        """Centre frequency (Hz) at a possibly fractional mel bin."""
        return np.interp(mel_bin, np.arange(self.n_mels), self.bin_centres_hz)

    def hz_to_bin(self, hz: float | np.ndarray) -> float | np.ndarray:
        """Fractional mel bin whose centre is at ``hz`` (clipped to the bank)."""
        return np.interp(hz, self.bin_centres_hz, np.arange(self.n_mels))

    def bins_for_band(self, f_lo_hz: float, f_hi_hz: float) -> tuple[int, int]:
        """Inclusive range of mel bins whose filters overlap ``[f_lo_hz, f_hi_hz]``."""
        edges = self.bin_edges_hz
        touching = np.flatnonzero((edges[:, 1] > f_lo_hz) & (edges[:, 0] < f_hi_hz))
        if touching.size == 0:
            nearest = int(np.argmin(np.abs(self.bin_centres_hz - 0.5 * (f_lo_hz + f_hi_hz))))
            return nearest, nearest
        # Keep the bins whose centre lies inside, plus one filter of skirt each side.
        centres = self.bin_centres_hz
        inside = np.flatnonzero((centres >= f_lo_hz) & (centres <= f_hi_hz))
        if inside.size == 0:
            return int(touching[0]), int(touching[-1])
        return int(max(inside[0] - 1, 0)), int(min(inside[-1] + 1, self.n_mels - 1))

    @property
    def seconds_per_frame(self) -> float:
        return self.hop_length / self.sr

    def frame_to_seconds(self, frame: float | np.ndarray) -> float | np.ndarray:
        return np.asarray(frame) * self.seconds_per_frame

    def seconds_to_frame(self, seconds: float | np.ndarray) -> float | np.ndarray:
        return np.asarray(seconds) / self.seconds_per_frame

    @property
    def kept_seconds(self) -> float:
        """Seconds of a clip that its ``target_T`` kept frames depend on (centred frames reach
        ``n_fft / 2`` past their hop), with ``n_fft`` samples to spare for a resampler's edge:
        extract reads no more, so its memory does not grow with the clip's length."""
        return ((self.target_T - 1) * self.hop_length + 2 * self.n_fft) / self.sr

    def n_frames(self, n_samples: int) -> int:
        """Frames of a centred STFT of ``n_samples`` samples."""
        return 1 + n_samples // self.hop_length

    @cached_property
    def window(self) -> np.ndarray:
        """The periodic Hann window librosa.stft uses, float32.

        ``np.hanning(n + 1)[:-1]`` is the periodic window (scipy's ``fftbins=True``);
        importing scipy.signal for it would cost about 0.9 s in every stage process.
        """
        return np.hanning(self.n_fft + 1)[:-1].astype(np.float32)

    def power_spectrogram(self, y: np.ndarray) -> np.ndarray:
        """|STFT|**power, shape (1 + n_fft // 2, frames).

        The same frames as ``librosa.stft(center=True, pad_mode="constant")``
        (zero padding of n_fft // 2 each side, periodic Hann window), computed as
        one frame matrix through ``scipy.fft.rfft``: librosa.stft spends more than
        half its time on checks and blocking around that FFT (1.8 vs 0.8 ms a clip).
        """
        import scipy.fft  # here, not at the top: only extract needs it (0.3 s to import)

        padded = np.pad(np.asarray(y, dtype=np.float32), self.n_fft // 2)
        frames = np.lib.stride_tricks.sliding_window_view(padded, self.n_fft)[:: self.hop_length]
        spectrum = scipy.fft.rfft(frames * self.window, axis=1)
        # For power 2, |S|^2 straight from the parts: no sqrt and no float pow.
        power = (
            spectrum.real**2 + spectrum.imag**2
            if self.power == 2.0
            else np.abs(spectrum) ** self.power
        )
        return power.T

    def log_mel(self, y: np.ndarray) -> np.ndarray:
        """Log-mel (dB) of a mono float signal at ``sr``, shape (n_mels, frames), float32.

        Equal (to float32 rounding) to ``librosa.power_to_db(librosa.feature.melspectrogram(
        ..., htk=True, norm=None), ref=1.0, top_db=top_db)``; the tests check it.
        """
        mel = self.mel_basis @ self.power_spectrogram(y)
        return power_to_db(mel, amin=1e-10, top_db=self.top_db).astype(np.float32)

    def librosa_log_mel(self, path: str | Path) -> np.ndarray:
        """Log-mel (dB) of one file the plain DCASE-baseline way, float32.

        ``librosa.load`` + ``librosa.feature.melspectrogram`` + ``power_to_db``,
        one call each: the reference :meth:`log_mel` is tested against and the
        baseline loop the extraction benchmark measures.
        """
        import librosa

        y, sr = librosa.load(path, sr=self.sr)
        mel = librosa.feature.melspectrogram(
            y=y,
            sr=sr,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            n_mels=self.n_mels,
            fmin=self.fmin,
            fmax=self.fmax,
            power=self.power,
            htk=True,
            norm=None,
        )
        return librosa.power_to_db(mel, ref=1.0, top_db=self.top_db).astype(np.float32)

    def crop_or_pad(self, logmel: np.ndarray, fill: np.ndarray | float) -> np.ndarray:
        """Crop to ``target_T`` frames from the start, or pad at the end with ``fill`` per bin."""
        T = self.target_T
        if logmel.shape[1] >= T:
            return np.ascontiguousarray(logmel[:, :T])
        out = np.empty((logmel.shape[0], T), dtype=np.float32)
        out[:, : logmel.shape[1]] = logmel
        out[:, logmel.shape[1] :] = np.asarray(fill, dtype=np.float32).reshape(-1, 1)
        return out
