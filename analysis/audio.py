"""Reading audio: clips loaded and checked, their log-mels, and the normalization of a clip's
log-mel, for every stage that reads audio (``extract``, ``downstream``).

:func:`load_clip` loads a clip as mono float32 at the feature rate, or raises
:class:`ClipError` with the reason listed in ``skipped.csv`` (unreadable, truncated, empty,
non-finite, too short, silent or constant); :func:`log_mels_of_files` loads and log-mels a
list of files (their log-mels, or their per-bin moments); :func:`normalize_clip` applies
``features.normalization`` to one clip's log-mel.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from analysis.mel import MelGeometry

PCM16_SCALE = np.float32(1 / 32768)
STD_FLOOR_DB = 1e-3  # a bin constant over all train frames is divided by this, not by 0


class ClipError(Exception):
    """A clip that cannot be used; the message is the reason listed in skipped.csv."""


@dataclass
class Loaded:
    samples: np.ndarray
    resampled: bool = False
    downmixed: bool = False


def declared_wav_frames(path: str | Path) -> int | None:
    """The frames a RIFF/WAVE file's header declares (its ``data`` chunk size over the block
    size), or None when it is not a readable RIFF header. libsndfile reports the frames the
    file actually holds, so a file cut short would otherwise pass as a shorter clip."""
    try:
        with open(path, "rb") as fh:
            if fh.read(12)[8:12] != b"WAVE":
                return None
            block_align = None
            while True:
                header = fh.read(8)
                if len(header) < 8:
                    return None
                chunk_id, size = header[:4], int.from_bytes(header[4:], "little")
                if chunk_id == b"fmt ":
                    fmt = fh.read(size)
                    block_align = int.from_bytes(fmt[12:14], "little")
                    fh.seek(size % 2, 1)
                elif chunk_id == b"data":
                    return size // block_align if block_align else None
                else:
                    fh.seek(size + size % 2, 1)
    except OSError:
        return None


def read_audio(path: str | Path, max_seconds: float | None = None) -> tuple[np.ndarray, int, int]:
    """Samples, native rate and the clip's total frames, reading at most ``max_seconds``.

    Returns samples as ``librosa.load(path, sr=None, mono=False)`` does. Formats
    libsndfile reads go straight through soundfile (as inside librosa.load); only a
    format it does not recognize goes to librosa.load itself (its audioread fallback;
    librosa is imported only then: its import costs about 2 s). A file libsndfile
    recognizes but cannot read (a broken chunk) raises with libsndfile's reason.
    """
    try:
        audio = sf.SoundFile(path)
    except sf.LibsndfileError as err:
        if "recognised" not in str(err) and "recognized" not in str(err):
            raise ClipError(f"unreadable or corrupt audio: {err.error_string}") from None
        import librosa

        total = round(librosa.get_duration(path=path) * librosa.get_samplerate(path))
        y, native_sr = librosa.load(path, sr=None, mono=False, duration=max_seconds)
        return y, native_sr, total
    with audio:
        total = audio.frames
        n = total if max_seconds is None else min(total, math.ceil(max_seconds * audio.samplerate))
        if audio.subtype == "PCM_16":
            # libsndfile's own int16 -> float conversion is x / 32768, exact in float32;
            # done here it is 5x faster than asking libsndfile for float32.
            pcm = audio.read(n, dtype="int16", always_2d=False)
            return (pcm.astype(np.float32) * PCM16_SCALE).T, audio.samplerate, total
        return audio.read(n, dtype="float32", always_2d=False).T, audio.samplerate, total


def load_clip(
    path: str | Path, sr: int, min_duration_s: float, max_seconds: float | None = None
) -> Loaded:
    """Load a clip as mono float32 at ``sr`` (at most its first ``max_seconds``, the part the
    features keep); raise ClipError with a reason if it is unusable."""
    try:
        y, native_sr, total = read_audio(path, max_seconds)
    except ClipError:
        raise
    except Exception as err:  # noqa: BLE001 - any decoder failure means the file is unusable
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ClipError(f"unreadable or corrupt audio: {first_line}") from None
    declared = declared_wav_frames(path) if str(path).lower().endswith(".wav") else None
    if declared is not None and declared > total:
        raise ClipError(
            f"truncated file: the header promises {declared / native_sr:.2f} s, "
            f"the file holds {total / native_sr:.2f} s"
        )
    loaded = Loaded(y)
    if y.ndim == 2:
        import librosa  # rare in DCASE data: librosa's own downmix

        loaded.samples = librosa.to_mono(y)
        loaded.downmixed = True
    if loaded.samples.size == 0:
        raise ClipError("empty clip (no samples)")
    if not np.all(np.isfinite(loaded.samples)):
        raise ClipError("non-finite samples (NaN or inf)")
    duration_s = total / native_sr
    if duration_s < min_duration_s:
        raise ClipError(f"shorter than {min_duration_s:g} s ({duration_s:.2f} s)")
    check_not_constant(loaded.samples)
    if native_sr != sr:
        import librosa  # rare in DCASE data: librosa's own resampler (soxr)

        loaded.samples = librosa.resample(loaded.samples, orig_sr=native_sr, target_sr=sr)
        loaded.resampled = True
    return loaded


def check_not_constant(samples: np.ndarray) -> None:
    """Digital silence and DC clips hold no sound: every log-mel cell is the same, so they
    would enter every statistic as zero-variance clips. They are skipped with a reason."""
    low, high = float(samples.min()), float(samples.max())
    if high - low < float(PCM16_SCALE):  # below one 16-bit step
        if max(abs(low), abs(high)) < float(PCM16_SCALE):
            raise ClipError("silent clip (every sample is 0)")
        raise ClipError(f"constant clip (every sample is {low:.4g}: DC, no sound)")


@lru_cache(maxsize=4)
def _geometry(geometry: MelGeometry) -> MelGeometry:
    """One geometry per process, so its filter bank is built once."""
    return geometry


def warm_up(geometry: MelGeometry) -> None:
    """Read the filter bank and run one clip's path once, before the workers fork."""
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(geometry.sr // 10, dtype=np.float32), geometry.sr, format="WAV")
    buffer.seek(0)
    read_audio(buffer)
    _geometry(geometry).log_mel(np.zeros(geometry.sr, dtype=np.float32))


@dataclass
class ChunkResult:
    """What a worker returns for a chunk of clips."""

    statuses: list[tuple[str, str]]  # (file, "" if used else reason)
    notes: Counter = field(default_factory=Counter)
    logmels: list[np.ndarray] = field(default_factory=list)  # test chunks only
    count: int = 0  # train chunks: frames seen
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None


def log_mels_of_files(
    root: str, files: list[str], geometry: MelGeometry, min_duration_s: float, keep_logmels: bool
) -> ChunkResult:
    """Load and log-mel ``files`` (relative to ``root``): their log-mels when ``keep_logmels``,
    else their per-bin moments; a clip that fails to load is listed with its reason."""
    geometry = _geometry(geometry)
    result = ChunkResult(statuses=[])
    total = np.zeros(geometry.n_mels)
    total_sq = np.zeros(geometry.n_mels)
    for file in files:
        try:
            loaded = load_clip(
                Path(root) / file, geometry.sr, min_duration_s, geometry.kept_seconds
            )
        except ClipError as err:
            result.statuses.append((file, str(err)))
            continue
        result.notes["resampled"] += loaded.resampled
        result.notes["downmixed"] += loaded.downmixed
        logmel = geometry.log_mel(loaded.samples)
        result.statuses.append((file, ""))
        if keep_logmels:
            result.logmels.append(logmel)
        else:
            # Per-bin sums in float64; the chunk's (count, mean, M2) are merged across chunks.
            total += logmel.sum(axis=1, dtype=np.float64)
            total_sq += np.square(logmel, dtype=np.float64).sum(axis=1)
            result.count += logmel.shape[1]
    if result.count:
        result.mean = total / result.count
        result.m2 = np.maximum(total_sq - total * result.mean, 0.0)
    return result


def normalize_clip(
    raw: np.ndarray, geometry: MelGeometry, mode: str, mean: np.ndarray, divisor: np.ndarray
) -> np.ndarray:
    """One clip's (n_mels, target_T) feature under ``features.normalization``.

    ``train_per_bin``: pad with the train mean per bin, then subtract it and divide
    by the train std per bin (padding becomes exactly 0). ``per_clip``: what the
    training code does today: crop, standardize by the clip's own mean and std
    (over its own frames), then zero-pad. ``none``: the dB values, padded with
    the clip's own mean.
    """
    if mode == "train_per_bin":
        padded = geometry.crop_or_pad(raw, fill=mean)
        return (padded - mean[:, None]) / divisor[:, None]
    crop = raw[:, : geometry.target_T].astype(np.float64)
    centre = crop.mean()
    if mode == "per_clip":
        crop = (crop - centre) / max(float(crop.std()), STD_FLOOR_DB)
        centre = 0.0
    return geometry.crop_or_pad(crop.astype(np.float32), fill=np.float32(centre))
