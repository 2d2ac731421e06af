"""Signal primitives of the synthetic data set (``analysis.synthesize``): shaped noise,
drifting tones, band-limited clicks, envelopes, and the energy of a time-frequency region.

Pure numpy / scipy.fft on sample arrays at ``SR``; no machine knows about them beyond calling.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, partial

import numpy as np
import scipy.fft
from scipy.fft import next_fast_len

SR = 16000


@lru_cache(maxsize=8)
def _rfft_freqs(n: int) -> np.ndarray:
    freqs = np.fft.rfftfreq(n, 1.0 / SR)
    freqs.flags.writeable = False  # shared by every call: nobody may change it
    return freqs


def shaped_noise(
    rng: np.random.Generator, n: int, gain_of_hz: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """White noise filtered in the frequency domain by an amplitude response ``gain_of_hz``.

    The white noise is drawn as its spectrum: the rFFT of n white Gaussian samples
    has independent complex Gaussian bins of variance n (real at DC and at n/2),
    so drawing those directly gives the same noise without the forward FFT.
    float32 throughout (half the time of float64; the clips are 16-bit anyway).
    """
    # Real and imaginary parts side by side, read as complex64 without a copy.
    spectrum = rng.standard_normal(2 * (n // 2 + 1), dtype=np.float32).view(np.complex64)
    spectrum *= (gain_of_hz(_rfft_freqs(n)) * np.sqrt(n / 2)).astype(np.float32)
    spectrum[0] = spectrum[0].real * np.sqrt(2)  # DC is real, with the full variance
    if n % 2 == 0:
        spectrum[-1] = spectrum[-1].real * np.sqrt(2)  # so is the Nyquist bin
    return scipy.fft.irfft(spectrum, n).astype(np.float64)


def colour(
    slope_db_per_octave: float, resonances: list[tuple[float, float, float]] = ()
) -> Callable:
    """Amplitude response: a spectral slope plus Gaussian resonances ``(hz, width_hz, gain_db)``."""
    return partial(_colour_response, float(slope_db_per_octave), tuple(map(tuple, resonances)))


def _colour_amplitude(slope: float, resonances: tuple, freqs: np.ndarray) -> np.ndarray:
    f = np.maximum(freqs, 20.0)
    db = slope * np.log2(f / 1000.0)
    for centre, width, gain in resonances:
        db = db + gain * np.exp(-0.5 * ((freqs - centre) / width) ** 2)
    amp = 10 ** (db / 20)
    amp[freqs < 20.0] = 0.0
    return amp


@lru_cache(maxsize=64)
def _colour_response_cached(slope: float, resonances: tuple, n_bins: int) -> np.ndarray:
    amp = _colour_amplitude(slope, resonances, _rfft_freqs(2 * (n_bins - 1)))
    amp.flags.writeable = False
    return amp


def _colour_response(slope: float, resonances: tuple, freqs: np.ndarray) -> np.ndarray:
    """A machine's response is the same for all its clips: computed once per process."""
    if freqs.size > 1 and np.array_equal(freqs, _rfft_freqs(2 * (freqs.size - 1))):
        return _colour_response_cached(slope, resonances, freqs.size)
    return _colour_amplitude(slope, resonances, freqs)


def band(f_lo: float, f_hi: float, edge_hz: float = 30.0) -> Callable:
    """Amplitude response of a band-pass with soft edges."""

    def response(freqs: np.ndarray) -> np.ndarray:
        rise = np.clip((freqs - f_lo) / edge_hz + 0.5, 0, 1)
        fall = np.clip((f_hi - freqs) / edge_hz + 0.5, 0, 1)
        return rise * fall

    return response


@lru_cache(maxsize=4)
def _sample_sums(n: int) -> tuple[np.ndarray, np.ndarray]:
    """For samples i = 0..n-1: i + 1 and i (i + 1) / 2 (running sums of 1 and of i), float64."""
    i = np.arange(n, dtype=np.float64)
    count, triangle = i + 1, i * (i + 1) / 2
    count.flags.writeable = triangle.flags.writeable = False
    return count, triangle


def tone(
    t: np.ndarray, hz: float, rng: np.random.Generator, drift: float = 0.0, wobble: float = 0.0
) -> np.ndarray:
    """A unit-amplitude sinusoid whose frequency drifts linearly and wobbles slowly.

    ``t`` is the clip's time axis, ``arange(n) / SR``. The phase is the running sum
    of the instantaneous frequency ``hz (1 + drift (t / t[-1] - 0.5) + wobble
    slow(t))``: its constant and linear parts summed in closed form (float64),
    the slow wobble (float32, it is 0.001 of the frequency) by a running sum,
    wrapped to [0, 1) cycles before a float32 sine (several times faster than
    float64, and exact enough for 16-bit output once the phase is small).
    """
    n = t.size
    rate = 0.2 + 0.3 * rng.random()
    slow_phase = np.float32(rng.uniform(0, 6.3))
    count, triangle = _sample_sums(n)
    cycles = count * (hz * (1 - 0.5 * drift) / SR)
    if drift:
        cycles += triangle * (hz * drift / (max(n - 1, 1) * SR))
    if wobble:
        slow = np.sin(
            np.float32(2 * np.pi * rate / SR) * np.arange(n, dtype=np.float32) + slow_phase
        )
        cycles += np.cumsum(slow) * (hz * wobble / SR)
    cycles += rng.uniform(0, 1)
    cycles -= np.floor(cycles)
    return np.sin((2 * np.pi) * cycles.astype(np.float32)).astype(np.float64)


def clicks(
    rng: np.random.Generator,
    n: int,
    times_s: np.ndarray,
    f_lo: float,
    f_hi: float,
    decay_s: float,
    length_s: float | None = None,
) -> np.ndarray:
    """Band-limited decaying bursts starting at ``times_s``, ``length_s`` long (6 decays)."""
    out = np.zeros(n)
    length = int((6 * decay_s if length_s is None else length_s) * SR)
    env = np.exp(-np.arange(length) / (decay_s * SR))
    for start_s in times_s:
        start = int(start_s * SR)
        burst = shaped_noise(rng, length, band(f_lo, f_hi)) * env
        # A click jittered before the clip's start keeps only the part inside the clip.
        skip = max(0, -start)
        start, stop = max(0, start), min(n, start + length)
        if stop > start:
            out[start:stop] += burst[skip : skip + stop - start]
    return out / (np.sqrt(np.mean(out**2)) + 1e-12) if np.any(out) else out


def window_envelope(t: np.ndarray, start_s: float, end_s: float, ramp_s: float = 0.4) -> np.ndarray:
    """0 outside ``[start_s, end_s]``, 1 inside, with raised-cosine ramps."""
    rise = np.clip((t - start_s) / ramp_s, 0, 1)
    fall = np.clip((end_s - t) / ramp_s, 0, 1)
    return np.sin(0.5 * np.pi * np.minimum(rise, fall)) ** 2


@lru_cache(maxsize=64)
def _hann(n: int) -> np.ndarray:
    window = np.hanning(n)
    window.flags.writeable = False
    return window


def region_energy(y: np.ndarray, f_lo: float, f_hi: float, t0: float, t1: float) -> float:
    """Energy of ``y`` inside a time-frequency rectangle (FFT of the time slice)."""
    seg = y[int(t0 * SR) : max(int(t1 * SR), int(t0 * SR) + 64)]
    n_fft = next_fast_len(seg.size, real=True)
    spec = np.abs(np.fft.rfft(seg * _hann(seg.size), n_fft)) ** 2
    freqs = np.fft.rfftfreq(n_fft, 1.0 / SR)
    return float(spec[(freqs >= f_lo) & (freqs <= f_hi)].sum()) + 1e-20


def scale_to_gain(
    base: np.ndarray, part: np.ndarray, region: tuple[float, float, float, float], gain_db: float
) -> np.ndarray:
    """Scale ``part`` so that adding it raises ``base``'s energy in ``region`` by about ``gain_db``."""
    target = region_energy(base, *region) * (10 ** (gain_db / 10) - 1)
    have = region_energy(part, *region)
    return part * np.sqrt(target / have)
