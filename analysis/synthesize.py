"""Stage ``synthesize``: a small DCASE-like data set with ground-truth anomaly regions.

Real DCASE audio cannot be fetched at set-up time, so the default input is
made here. Each machine type has a normal sound built from physical parts
(rotating harmonics, flow/friction noise with resonances, impacts, an active
window for the toy machines) with a character of its own per ID and per-clip
variation (speed, level, phase, background). Anomalies follow what published
mean anomaly-minus-normal maps of DCASE 2020 Task 2 show:

* fan: a stationary narrow tone added or a normal tone removed, whole clip;
* pump: the pump's whine lost plus a broadband lift, or the whine shifted;
* slider: impulsive rail clicks, or a broad low-to-mid band change;
* valve: short extra clicks at quasi-periodic times;
* ToyCar: a mid-to-high band plus a thin line, across the machine's active window;
* ToyConveyor: several thin lines across the active window, some adding energy
  and some removing a normal motor harmonic.

Strength is calibrated to two published DCASE 2020 figures: at ``synthetic.strength``
1 the DCASE 2020 baseline autoencoder finds these anomalies about as often as it
finds the real ones (its AUC per machine type; ``benchmarks/bench_calibration.py``),
and the per-type realism measure (median over IDs of the peak over mel bins of
|time-averaged mean anomalous - mean normal| in per-clip standardized log-mel) is
checked against the published map figures. Each anomalous clip draws its gain:
the type's ``REALISTIC_GAIN_DB`` times its ID's detectability (ordered as the
published per-ID AUCs) times a log-normal draw of mean 1, so many clips barely
differ from normal ones and a few grossly; valve rattles also draw their length.
A larger strength multiplies every drawn gain (in dB): an easier demonstration set.

Every injected region goes to ``ground_truth.csv`` with its *measured* gain
(anomalous over normal energy in the region; negative where energy was removed).
The clips are synthetic: nothing computed on them is a finding about real machines.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft
import soundfile as sf
from scipy.fft import next_fast_len

from analysis.dcase import GROUND_TRUTH_COLUMNS, MACHINE_IDS, SECTION_LAYOUT, clip_name
from analysis.io import Progress, atomic_dir, log, write_csv, write_json
from analysis.published import PUBLISHED_ID_AUC_PCT
from analysis.synthetic_layout import to_section_layout
from analysis.workers import process_pool, resolve_n_jobs

SR = 16000
GENERATOR_VERSION = 3
# Typical anomaly gain (dB of energy change in the anomaly's region) at strength 1, per machine
# type: set so that the DCASE 2020 baseline autoencoder's AUC per type lands near its published
# development-set figure (analysis/calibration.py; the README shows the benchmark's table).
REALISTIC_GAIN_DB = {
    "fan": 2.55,
    "pump": 2.2,
    "slider": 0.8,
    "valve": 3.0,
    "ToyCar": 0.45,
    "ToyConveyor": 2.5,
}
CLIP_STRENGTH_LOG_SD = 0.6  # spread of each anomalous clip's gain around its ID's (log-normal)
MAX_GAIN_DB = 24.0  # a large synthetic.strength saturates here (and never clips the output)
# Published peak |mean anomalous - mean normal| per type (per-clip standardized log-mel,
# time-averaged), about +-40 %: what REALISTIC_GAIN_DB is calibrated to.
PUBLISHED_REALISM = {
    "fan": 0.5,
    "pump": 0.8,
    "slider": 0.8,
    "valve": 0.3,
    "ToyCar": 0.2,
    "ToyConveyor": 0.2,
}


def clip_duration_s(machine_type: str) -> float:
    """DCASE clips last about 10 s; ToyCar about 11 s."""
    return 11.0 if machine_type == "ToyCar" else 10.0


# --------------------------------------------------------------------------- signal parts


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


# --------------------------------------------------------------------------- machines


@dataclass
class Sound:
    """A clip as named parts, so an anomaly can remove or reshape one of them."""

    parts: dict[str, np.ndarray] = field(default_factory=dict)

    def mix(self) -> np.ndarray:
        return np.sum(list(self.parts.values()), axis=0)


@dataclass(frozen=True)
class Anomaly:
    kind: str
    regions: list[tuple[float, float, float, float]]  # (f_lo, f_hi, t0, t1)


def id_character(seed: int, machine_type: str, machine_id: str) -> np.random.Generator:
    key = zlib.crc32(f"{machine_type}/{machine_id}".encode())
    return np.random.default_rng([seed, key, 7])


def _tone_band(hz: float) -> tuple[float, float]:
    half = 0.025 * hz + 35.0
    return hz - half, hz + half


class Machine:
    """Normal-sound recipe of one machine type and ID; ``anomaly`` edits a normal sound."""

    def __init__(self, machine_type: str, machine_id: str, seed: int) -> None:
        self.machine_type, self.machine_id = machine_type, machine_id
        g = id_character(seed, machine_type, machine_id)
        self.id_index = MACHINE_IDS[machine_type].index(machine_id)
        self.f0 = g.uniform(80, 190)
        self.harmonic_db = -np.sort(g.uniform(0, 18, 6))
        self.resonances = [
            (g.uniform(250, 5000), g.uniform(80, 500), g.uniform(4, 12)) for _ in range(3)
        ]
        self.slope = g.uniform(-5, -2)
        self.special_hz = g.uniform(0.93, 1.07)  # ID-specific shift of characteristic frequencies
        self.period_s = g.uniform(0.9, 2.2)
        self.event_band = (g.uniform(800, 1500), g.uniform(3000, 4500))
        self.window = (g.uniform(0.6, 1.4), g.uniform(8.6, 9.6))

    # ---- normal sounds
    def normal(self, rng: np.random.Generator, n: int) -> Sound:
        t = np.arange(n) / SR
        speed = 1 + rng.normal(0, 0.01)
        sound = Sound()
        sound.parts["background"] = 0.05 * shaped_noise(rng, n, colour(-4.0))
        recipe = getattr(self, f"_normal_{self.machine_type}")
        recipe(sound, rng, t, speed)
        return sound

    def _harmonics(self, rng, t, f0, count=6, level=1.0, drift=0.003) -> np.ndarray:
        out = np.zeros_like(t)
        for k in range(count):
            out += 10 ** (self.harmonic_db[k % 6] / 20) * tone(
                t, f0 * (k + 1), rng, drift=drift, wobble=0.001
            )
        return level * out / np.sqrt(count)

    def _prominent_tone(self, s, rng, t, hz, above_db=10.0):
        """A steady tone standing ``above_db`` over the rest of the sound in its band."""
        region = (*_tone_band(hz), 0.0, t[-1])
        return scale_to_gain(s.mix(), tone(t, hz, rng, drift=0.002), region, above_db)

    def _normal_fan(self, s, rng, t, speed):
        s.parts["flow"] = 0.5 * shaped_noise(rng, t.size, colour(self.slope, self.resonances))
        s.parts["blades"] = 0.12 * self._harmonics(rng, t, self.f0 * speed)
        # A tonal component near mel bin 40-48 that some anomalies remove.
        self.fan_tone_hz = 1088.0 * self.special_hz * speed
        s.parts["fan_tone"] = self._prominent_tone(s, rng, t, self.fan_tone_hz)

    def _normal_pump(self, s, rng, t, speed):
        s.parts["flow"] = 0.5 * shaped_noise(rng, t.size, colour(self.slope, self.resonances))
        s.parts["motor"] = 0.12 * self._harmonics(rng, t, self.f0 * speed)
        self.whine_hz = 2150.0 * self.special_hz * speed
        s.parts["whine"] = self._prominent_tone(s, rng, t, self.whine_hz)

    def _normal_slider(self, s, rng, t, speed):
        phase = rng.uniform(0, 2 * np.pi)
        motion = 0.55 + 0.45 * np.sin(2 * np.pi * t / (self.period_s * speed) + phase)
        self.motion = motion
        s.parts["friction"] = (
            0.4 * motion * shaped_noise(rng, t.size, colour(self.slope, self.resonances))
        )
        s.parts["motor"] = 0.05 * self._harmonics(rng, t, self.f0 * speed, count=4)

    def _normal_valve(self, s, rng, t, speed):
        period = self.period_s * speed
        first = rng.uniform(0, period)
        times = np.arange(first, t[-1] - 0.2, period) + rng.normal(0, 0.01, 1)
        s.parts["solenoid"] = 0.25 * clicks(rng, t.size, times, 300.0, 2500.0, 0.012)
        s.parts["hiss"] = 0.04 * shaped_noise(rng, t.size, colour(self.slope, self.resonances))

    def _normal_ToyCar(self, s, rng, t, speed):
        lo, hi = self.window
        env = 0.15 + 0.85 * window_envelope(t, lo + rng.normal(0, 0.1), hi + rng.normal(0, 0.1))
        s.parts["wheels"] = (
            0.35 * env * shaped_noise(rng, t.size, colour(self.slope, self.resonances))
        )
        s.parts["motor"] = 0.15 * env * self._harmonics(rng, t, 2.5 * self.f0 * speed, drift=0.01)
        self.active_env = env

    def _normal_ToyConveyor(self, s, rng, t, speed):
        lo, hi = self.window
        env = 0.25 + 0.75 * window_envelope(t, lo + rng.normal(0, 0.1), hi + rng.normal(0, 0.1))
        s.parts["belt"] = (
            0.35 * env * shaped_noise(rng, t.size, colour(self.slope, self.resonances))
        )
        # Each motor harmonic is a part of its own, so an anomaly can take one away.
        self.conveyor_harmonics_hz = []
        for k in range(6):
            hz = self.f0 * speed * (k + 2)
            self.conveyor_harmonics_hz.append(hz)
            level = 0.1 * 10 ** (self.harmonic_db[k] / 20) / np.sqrt(6)
            s.parts[f"motor_h{k}"] = level * env * tone(t, hz, rng, drift=0.002, wobble=0.001)
        self.active_env = env

    # ---- anomalies
    def anomaly(self, sound: Sound, rng: np.random.Generator, gain_db: float) -> Anomaly:
        """Edit ``sound`` in place into an anomalous clip; return what was injected where."""
        n = next(iter(sound.parts.values())).size
        t = np.arange(n) / SR
        return getattr(self, f"_anomaly_{self.machine_type}")(sound, rng, t, gain_db)

    def _add(self, sound, name, part, region, gain_db):
        sound.parts[name] = scale_to_gain(sound.mix(), part, region, gain_db)

    def _anomaly_fan(self, s, rng, t, gain_db):
        dur = t[-1]
        if rng.random() < 0.6:
            # A bearing/imbalance tone near mel bin 40 (about 830 Hz), ID-specific.
            hz = 830.0 * self.special_hz * rng.uniform(0.98, 1.02)
            f_lo, f_hi = _tone_band(hz)
            region = (f_lo, f_hi, 0.0, dur)
            self._add(s, "anomaly_tone", tone(t, hz, rng, drift=0.002), region, gain_db)
            return Anomaly("tone_added", [region])
        f_lo, f_hi = _tone_band(self.fan_tone_hz)
        s.parts["fan_tone"] = s.parts["fan_tone"] * 10 ** (-gain_db / 20)
        return Anomaly("tone_removed", [(f_lo, f_hi, 0.0, dur)])

    def _anomaly_pump(self, s, rng, t, gain_db):
        dur = t[-1]
        whine = s.parts.pop("whine")
        lost = _tone_band(self.whine_hz)
        if rng.random() < 0.5:
            lo = rng.uniform(2800, 3600)
            lift = (lo, lo + rng.uniform(1200, 2200), 0.0, dur)
            s.parts["whine"] = whine * 10 ** (-gain_db / 20)
            self._add(s, "lift", shaped_noise(rng, t.size, band(lift[0], lift[1])), lift, gain_db)
            return Anomaly("tone_lost_broadband_lift", [(*lost, 0.0, dur), lift])
        shifted_hz = self.whine_hz * rng.uniform(1.12, 1.2)
        new = (*_tone_band(shifted_hz), 0.0, dur)
        s.parts["whine"] = whine * 10 ** (-gain_db / 20)
        self._add(s, "shifted", tone(t, shifted_hz, rng, drift=0.002), new, gain_db)
        return Anomaly("tone_shifted", [(*lost, 0.0, dur), new])

    def _anomaly_slider(self, s, rng, t, gain_db):
        dur = t[-1]
        if self.id_index % 2 == 0:
            lo = rng.uniform(150, 300)
            region = (lo, lo + rng.uniform(900, 1400), 0.0, dur)
            self._add(
                s,
                "band_change",
                # Friction of its own: it follows the slide's motion as the normal one does.
                self.motion * shaped_noise(rng, t.size, band(region[0], region[1])),
                region,
                gain_db,
            )
            return Anomaly("band_change", [region])
        return self._event_clicks(
            s, rng, t, gain_db, "rail_clicks", self.event_band, rng.integers(4, 9)
        )

    def _anomaly_valve(self, s, rng, t, gain_db):
        # Each clip draws its extent too: how long its extra rattles ring (0.1-0.6 s).
        f_lo = rng.uniform(3000, 4000)
        count, length_s = rng.integers(3, 7), rng.uniform(0.1, 0.6)
        return self._event_clicks(
            s, rng, t, gain_db, "extra_clicks", (f_lo, f_lo + 2500), count, length_s, ringing=True
        )

    def _event_clicks(self, s, rng, t, gain_db, kind, f_band, count, length_s=0.1, ringing=False):
        dur = t[-1]
        period = (dur - 1.0) / count
        times = 0.3 + np.arange(count) * period + rng.uniform(0, 0.5 * period, count)
        # A click decays within its length; a rattle rings through it (decay = its length).
        decay_s = length_s if ringing else length_s / 6
        part = clicks(rng, t.size, times, f_band[0], f_band[1], decay_s, length_s)
        regions = [(f_band[0], f_band[1], float(x), float(min(x + length_s, dur))) for x in times]
        # Scale so each click's rectangle rises by about gain_db.
        base = s.mix()
        ratio = np.median([region_energy(base, *r) / region_energy(part, *r) for r in regions])
        s.parts[kind] = part * np.sqrt(ratio * (10 ** (gain_db / 10) - 1))
        return Anomaly(kind, regions)

    def _active_window(self, t) -> tuple[float, float]:
        """Start and end (s) of this clip's active window: where its envelope is over half."""
        on = np.flatnonzero(self.active_env > 0.5 * self.active_env.max())
        return float(t[on[0]]), float(t[on[-1]])

    def _anomaly_ToyCar(self, s, rng, t, gain_db):
        # A broad mid-to-high band plus a thin line, across the whole active window.
        t0, t1 = self._active_window(t)
        env = self.active_env
        lo = rng.uniform(850, 1300)
        broad = (lo, lo + rng.uniform(2500, 3600), t0, t1)
        self._add(
            s, "rattle", env * shaped_noise(rng, t.size, band(broad[0], broad[1])), broad, gain_db
        )
        hz = rng.uniform(broad[1] + 300, 7000)
        line = (*_tone_band(hz), t0, t1)
        self._add(s, "whistle", env * tone(t, hz, rng, drift=0.002), line, gain_db)
        return Anomaly("band_and_line_in_window", [broad, line])

    def _anomaly_ToyConveyor(self, s, rng, t, gain_db):
        # Two to four thin lines across the active window: some added, some a normal motor
        # harmonic taken away.
        t0, t1 = self._active_window(t)
        env = self.active_env
        regions = []
        n_lines = int(rng.integers(2, 5))
        n_removed = int(rng.integers(1, n_lines))  # at least one line of each kind
        for k in rng.choice(6, n_removed, replace=False):
            hz = self.conveyor_harmonics_hz[k]
            s.parts[f"motor_h{k}"] = s.parts[f"motor_h{k}"] * 10 ** (-gain_db / 20)
            regions.append((*_tone_band(hz), t0, t1))
        for k, hz in enumerate(np.sort(rng.uniform(1500, 6000, n_lines - n_removed))):
            region = (*_tone_band(hz), t0, t1)
            self._add(s, f"line{k}", env * tone(t, hz, rng, drift=0.002), region, gain_db)
            regions.append(region)
        return Anomaly("lines_in_window", regions)


# --------------------------------------------------------------------------- clips


@dataclass(frozen=True)
class ClipJob:
    machine_type: str
    machine_id: str
    split: str
    label: int
    index: int
    seed: int
    strength: float
    stream: int = 0  # 0: the default set's clips; another value: clips of a stream of its own

    @property
    def file(self) -> str:
        return (
            f"{self.machine_type}/{self.split}/{clip_name(self.label, self.machine_id, self.index)}"
        )


def id_detectability(machine_type: str, machine_id: str) -> float:
    """How much stronger than its type's typical anomaly an ID's anomalies are (mean 1 per type).

    Follows the published per-ID baseline AUCs: an ID's binormal separation
    d = sqrt(2) probit(AUC) grows with the square of the gain (a detector's squared error
    does), so the ID's gain scales with sqrt(d), relative to the type's mean.
    """
    from scipy.stats import norm

    def root_d(auc_pct: float) -> float:
        return float(np.sqrt(np.sqrt(2) * norm.ppf(auc_pct / 100)))

    published = PUBLISHED_ID_AUC_PCT[machine_type]
    return root_d(published[machine_id]) / np.mean([root_d(v) for v in published.values()])


def clip_gain_db(
    rng: np.random.Generator, machine_type: str, machine_id: str, strength: float
) -> float:
    """One anomalous clip's drawn gain (dB): strength x type gain x ID detectability x a
    log-normal draw of mean 1 (many clips barely differ from normal, a few grossly), capped."""
    draw = rng.lognormal(-0.5 * CLIP_STRENGTH_LOG_SD**2, CLIP_STRENGTH_LOG_SD)
    typical = REALISTIC_GAIN_DB[machine_type] * id_detectability(machine_type, machine_id)
    return float(min(strength * typical * draw, MAX_GAIN_DB))


def render_clip(job: ClipJob) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Make one clip: int16 samples and its ground-truth rows (empty for normal clips)."""
    machine = Machine(job.machine_type, job.machine_id, job.seed)
    key = zlib.crc32(job.file.encode())
    rng = np.random.default_rng([job.seed, key, job.stream] if job.stream else [job.seed, key])
    n = int(clip_duration_s(job.machine_type) * SR)
    sound = machine.normal(rng, n)
    normal_mix = sound.mix()
    # The level comes from the normal sound only: an anomaly must never rescale the whole
    # clip (that would turn a local change into a global one). -30 dBFS leaves room for clicks.
    level = 10 ** ((-30 + rng.normal(0, 1.0)) / 20) / (np.sqrt(np.mean(normal_mix**2)) + 1e-12)
    rows: list[dict[str, Any]] = []
    if job.label == 1:
        gain_db = clip_gain_db(rng, job.machine_type, job.machine_id, job.strength)
        anomaly = machine.anomaly(sound, rng, gain_db)
        mix = sound.mix()
        for region in anomaly.regions:
            measured = 10 * np.log10(
                region_energy(mix, *region) / region_energy(normal_mix, *region)
            )
            rows.append(
                {
                    "file": job.file,
                    "kind": anomaly.kind,
                    "f_lo_hz": round(max(region[0], 0.0), 1),
                    "f_hi_hz": round(min(region[1], SR / 2), 1),
                    "t_start_s": round(region[2], 3),
                    "t_end_s": round(region[3], 3),
                    "gain_db": round(float(measured), 2),
                    "clip_strength_db": round(float(gain_db), 2),
                }
            )
    else:
        mix = normal_mix
    y = np.clip(mix * level, -1.0, 32767 / 32768)
    return np.round(y * 32767).astype(np.int16), rows


def _write_clip(job_and_root: tuple[ClipJob, str]) -> list[dict[str, Any]]:
    job, root = job_and_root
    samples, rows = render_clip(job)
    # Encoded in memory, written by Python: a full disk or a size limit then fails with an
    # OSError that names the file and the cause (libsndfile says only "System error").
    buffer = io.BytesIO()
    sf.write(buffer, samples, SR, subtype="PCM_16", format="WAV")
    path = Path(root) / job.file
    try:
        path.write_bytes(buffer.getvalue())
    except OSError as err:  # a failed write() carries no file name: give it one
        raise OSError(err.errno, err.strerror, str(path)) from None
    return rows


def plan_jobs(params: dict[str, Any]) -> list[ClipJob]:
    """Every clip the synthetic set holds, in a fixed order."""
    s = params["synthetic"]
    jobs = []
    for machine_type in params["data"]["machine_types"]:
        for machine_id in MACHINE_IDS[machine_type][: s["ids_per_type"]]:
            counts = [
                ("train", 0, s["train_clips_per_id"]),
                ("test", 0, s["test_normal_clips_per_id"]),
                ("test", 1, s["test_anomaly_clips_per_id"]),
            ]
            for split, label, count in counts:
                for index in range(count):
                    jobs.append(
                        ClipJob(
                            machine_type,
                            machine_id,
                            split,
                            label,
                            index,
                            s["seed"],
                            s["strength"],
                        )
                    )
    return jobs


# The random stream of the extra train clips (write_train_clips): the same machines as the
# default set, clips that never repeat one of its own.
EXTRA_TRAIN_STREAM = 1


def write_train_clips(params: dict[str, Any], root: Path, n_per_id: int) -> list[Path]:
    """Write extra normal train clips of the default set's machines, DCASE 2020 layout.

    Parameters
    ----------
    params
        Validated params; reads ``synthetic.*`` (seed, IDs per type, n_jobs) and
        ``data.machine_types``.
    root
        The clips go to ``root/<type>/train/normal_id_XX_NNNNNNNN.wav`` (folders made).
    n_per_id
        Clips per (type, ID), numbered 0 .. n_per_id - 1.

    Returns
    -------
    The written paths, in (type, ID, index) order. Each (type, ID) sounds as that machine
    does in the default set (same per-ID character); the clips come from a random stream
    of their own, so none repeats a default train or test clip. Deterministic.
    """
    s = params["synthetic"]
    jobs = [
        ClipJob(
            machine_type,
            machine_id,
            "train",
            0,
            index,
            s["seed"],
            s["strength"],
            EXTRA_TRAIN_STREAM,
        )
        for machine_type in params["data"]["machine_types"]
        for machine_id in MACHINE_IDS[machine_type][: s["ids_per_type"]]
        for index in range(n_per_id)
    ]
    root = Path(root)
    for machine_type in params["data"]["machine_types"]:
        (root / machine_type / "train").mkdir(parents=True, exist_ok=True)
    n_jobs = resolve_n_jobs(s["n_jobs"])
    progress = Progress("synthesize: extra train clips", len(jobs))
    with process_pool(n_jobs) as pool:
        for _ in pool.map(_write_clip, [(job, str(root)) for job in jobs], chunksize=4):
            progress.advance()
    progress.close(f"{n_jobs} processes")
    return [root / job.file for job in jobs]


def synthesize(params: dict[str, Any], out_dir: str | Path = "data/synthetic") -> Path:
    """Write the synthetic DCASE-layout data set and its ground truth.

    Parameters
    ----------
    params
        Validated params; reads ``synthetic.*`` and ``data.machine_types``.
    out_dir
        Where the tree goes; replaced atomically when complete.
    """
    # Real data may list types the synthetic set does not make (ToyTrain): it makes the others.
    known = [t for t in params["data"]["machine_types"] if t in MACHINE_IDS]
    params = {**params, "data": {**params["data"], "machine_types": known}}
    jobs = plan_jobs(params)
    n_jobs = resolve_n_jobs(params["synthetic"]["n_jobs"])
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        for machine_type in params["data"]["machine_types"]:
            for split in ("train", "test"):
                (tmp / machine_type / split).mkdir(parents=True)
        progress = Progress("synthesize: clips", len(jobs))
        truth: dict[str, list[dict[str, Any]]] = {m: [] for m in params["data"]["machine_types"]}
        tasks = [(job, str(tmp)) for job in jobs]
        with process_pool(n_jobs) as pool:
            for job, rows in zip(jobs, pool.map(_write_clip, tasks, chunksize=4), strict=True):
                truth[job.machine_type].extend(rows)
                progress.advance()
        progress.close(f"{n_jobs} processes")
        if params["synthetic"]["layout"] == SECTION_LAYOUT:  # sections, domains, attributes
            truth = to_section_layout(tmp, truth)
        for machine_type, rows in truth.items():
            write_csv(tmp / machine_type / "ground_truth.csv", rows, GROUND_TRUTH_COLUMNS)
        write_json(
            tmp / "synthetic.json",
            {
                "synthetic": True,
                "generator_version": GENERATOR_VERSION,
                "sample_rate": SR,
                "params": params["synthetic"],
                "machine_types": params["data"]["machine_types"],
                "n_clips": len(jobs),
                "note": "Synthetic DCASE-like clips made by `python -m analysis synthesize`; "
                "not recordings of real machines.",
            },
        )
    log(f"synthesize: wrote {len(jobs)} clips under {out_dir}")
    return out_dir
