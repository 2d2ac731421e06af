"""The machines of the synthetic data set (``analysis.synthesize``): per machine type and ID a
normal-sound recipe built from physical parts and an anomaly that edits it, and how strong each
anomalous clip is (the type's typical gain, the ID's detectability, a per-clip draw).
"""

from __future__ import annotations

import statistics
import zlib
from dataclasses import dataclass, field

import numpy as np

from analysis.dcase import MACHINE_IDS
from analysis.published import PUBLISHED_ID_AUC_PCT
from analysis.synthesize_signals import (
    SR,
    band,
    clicks,
    colour,
    region_energy,
    scale_to_gain,
    shaped_noise,
    tone,
    window_envelope,
)

# Typical anomaly gain (dB of energy change in the anomaly's region) at strength 1, per machine
# type: set so that the DCASE 2020 baseline autoencoder's AUC per type lands near its published
# development-set figure (analysis/calibration.py; the README shows the benchmark's table).
REALISTIC_GAIN_DB = {
    "fan": 2.55,
    "pump": 3.2,
    "slider": 5.0,
    "valve": 4.8,
    "ToyCar": 0.45,
    "ToyConveyor": 2.0,
}
# How an ID's gain follows its published AUC (id_detectability): sqrt(d) unless listed here.
ID_DETECTABILITY_POWER = {"pump": 1.0, "slider": 1.0, "valve": 1.0}
CLIP_STRENGTH_LOG_SD = 0.6  # spread of each anomalous clip's gain around its ID's (log-normal)
# Types whose clips spread otherwise (slider: at 0.6 its best IDs' partial AUC stayed far above
# the published one; 0.9 leaves more of its anomalous clips near normal).
CLIP_STRENGTH_LOG_SD_BY_TYPE = {"slider": 0.9}
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


@dataclass(frozen=True)
class ClipConditions:
    """How a type's normal clips differ from clip to clip beyond speed, phase and level.

    Real normal clips of one machine carry changing background noise and operating conditions;
    without them a clip-averaged detector sees every normal clip of an ID alike, and even a weak
    anomaly stands out. Per clip (drawn from a random stream of their own, so a type without
    conditions keeps its clips): the machine noise's spectral slope moves by a normal draw of
    ``tilt_sd_db_per_octave``; factory noise of a random colour is added at a normal draw of
    ``factory_db`` +- ``factory_sd_db`` relative to the machine's RMS; a Poisson number (mean
    ``knocks_per_clip``) of short broadband knocks whose RMS over the clip is ``knock_db``
    relative to the machine's; and a share ``interference_share`` of the clips carries an
    interference (another machine nearby: a narrow noise band anywhere in 300-6000 Hz,
    ``interference_db`` relative to the machine's RMS), the few normal clips any detector
    scores high, which keep the partial AUC at low false-alarm rates realistic.
    """

    tilt_sd_db_per_octave: float = 0.0
    factory_db: float | None = None
    factory_sd_db: float = 0.0
    knocks_per_clip: float = 0.0
    knock_db: float = 0.0
    interference_share: float = 0.0
    interference_db: float = 0.0


# Types without an entry keep only the common variation (speed, phase, level, background).
CLIP_CONDITIONS: dict[str, ClipConditions] = {
    "slider": ClipConditions(
        tilt_sd_db_per_octave=1.5,
        factory_db=-6.0,
        factory_sd_db=6.0,
        knocks_per_clip=1.0,
        knock_db=-10.0,
        interference_share=0.12,
        interference_db=-6.0,
    ),
    "pump": ClipConditions(
        factory_db=-10.0,
        factory_sd_db=4.0,
        knocks_per_clip=0.5,
        knock_db=-10.0,
        interference_share=0.1,
        interference_db=-6.0,
    ),
    "valve": ClipConditions(
        factory_db=-15.0,
        factory_sd_db=4.0,
        knocks_per_clip=1.0,
        knock_db=-6.0,
        interference_share=0.1,
        interference_db=-6.0,
    ),
}


def clip_duration_s(machine_type: str) -> float:
    """DCASE clips last about 10 s; ToyCar about 11 s."""
    return 11.0 if machine_type == "ToyCar" else 10.0


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
        # Where this machine's faults sound (ToyConveyor's recurring line): drawn last, so the
        # draws above are those of every earlier generator version.
        self.defect_hz = g.uniform(1800, 5000)

    # ---- normal sounds
    def normal(
        self, rng: np.random.Generator, n: int, conditions_rng: np.random.Generator | None = None
    ) -> Sound:
        """A normal clip; ``conditions_rng`` draws its type's ``CLIP_CONDITIONS`` (none: none)."""
        t = np.arange(n) / SR
        speed = 1 + rng.normal(0, 0.01)
        conditions = CLIP_CONDITIONS.get(self.machine_type)
        if conditions_rng is None or conditions is None:
            conditions = ClipConditions()
        # This clip's spectral slope of the machine noise (dB/octave).
        tilt_sd = conditions.tilt_sd_db_per_octave
        tilt = tilt_sd * float(np.clip(conditions_rng.normal(), -2.5, 2.5)) if tilt_sd else 0.0
        self.clip_slope = self.slope + tilt
        sound = Sound()
        sound.parts["background"] = 0.05 * shaped_noise(rng, n, colour(-4.0))
        recipe = getattr(self, f"_normal_{self.machine_type}")
        recipe(sound, rng, t, speed)
        self._add_conditions(sound, conditions_rng, conditions, n)
        return sound

    def _add_conditions(self, sound: Sound, rng, conditions: ClipConditions, n: int) -> None:
        """Factory noise, knocks and interference of this clip, relative to the machine's RMS."""
        if conditions == ClipConditions():
            return
        machine_rms = np.sqrt(np.mean(sound.mix() ** 2))
        if conditions.factory_db is not None:
            level_db = conditions.factory_db + conditions.factory_sd_db * rng.normal()
            lo = rng.uniform(100, 600)
            factory = shaped_noise(
                rng, n, colour(rng.uniform(-6, -2), [(lo * 2, lo, rng.uniform(3, 9))])
            )
            sound.parts["factory"] = factory * machine_rms * 10 ** (level_db / 20)
        count = rng.poisson(conditions.knocks_per_clip)
        if count:
            times = rng.uniform(0, n / SR - 0.1, count)
            f_lo = rng.uniform(200, 1500)
            knocks = clicks(rng, n, times, f_lo, rng.uniform(4000, 7500), 0.015)
            sound.parts["knocks"] = knocks * machine_rms * 10 ** (conditions.knock_db / 20)
        if conditions.interference_share and rng.random() < conditions.interference_share:
            hz = rng.uniform(300, 6000)
            hum = shaped_noise(rng, n, band(0.97 * hz, 1.03 * hz))
            hum *= machine_rms * 10 ** (conditions.interference_db / 20) / np.sqrt(np.mean(hum**2))
            sound.parts["interference"] = hum

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
        s.parts["flow"] = 0.5 * shaped_noise(rng, t.size, colour(self.clip_slope, self.resonances))
        s.parts["blades"] = 0.12 * self._harmonics(rng, t, self.f0 * speed)
        # A tonal component near mel bin 40-48 that some anomalies remove.
        self.fan_tone_hz = 1088.0 * self.special_hz * speed
        s.parts["fan_tone"] = self._prominent_tone(s, rng, t, self.fan_tone_hz)

    def _normal_pump(self, s, rng, t, speed):
        s.parts["flow"] = 0.5 * shaped_noise(rng, t.size, colour(self.clip_slope, self.resonances))
        s.parts["motor"] = 0.12 * self._harmonics(rng, t, self.f0 * speed)
        self.whine_hz = 2150.0 * self.special_hz * speed
        s.parts["whine"] = self._prominent_tone(s, rng, t, self.whine_hz)

    def _normal_slider(self, s, rng, t, speed):
        phase = rng.uniform(0, 2 * np.pi)
        motion = 0.55 + 0.45 * np.sin(2 * np.pi * t / (self.period_s * speed) + phase)
        self.motion = motion
        s.parts["friction"] = (
            0.4 * motion * shaped_noise(rng, t.size, colour(self.clip_slope, self.resonances))
        )
        s.parts["motor"] = 0.05 * self._harmonics(rng, t, self.f0 * speed, count=4)

    def _normal_valve(self, s, rng, t, speed):
        period = self.period_s * speed
        first = rng.uniform(0, period)
        times = np.arange(first, t[-1] - 0.2, period) + rng.normal(0, 0.01, 1)
        s.parts["solenoid"] = 0.25 * clicks(rng, t.size, times, 300.0, 2500.0, 0.012)
        s.parts["hiss"] = 0.04 * shaped_noise(rng, t.size, colour(self.clip_slope, self.resonances))

    def _normal_ToyCar(self, s, rng, t, speed):
        lo, hi = self.window
        env = 0.15 + 0.85 * window_envelope(t, lo + rng.normal(0, 0.1), hi + rng.normal(0, 0.1))
        s.parts["wheels"] = (
            0.35 * env * shaped_noise(rng, t.size, colour(self.clip_slope, self.resonances))
        )
        s.parts["motor"] = 0.15 * env * self._harmonics(rng, t, 2.5 * self.f0 * speed, drift=0.01)
        self.active_env = env

    def _normal_ToyConveyor(self, s, rng, t, speed):
        lo, hi = self.window
        env = 0.25 + 0.75 * window_envelope(t, lo + rng.normal(0, 0.1), hi + rng.normal(0, 0.1))
        s.parts["belt"] = (
            0.35 * env * shaped_noise(rng, t.size, colour(self.clip_slope, self.resonances))
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
        # Each clip draws how long its rail clicks last (0.1-0.3 s), as valve's rattles do.
        count, length_s = rng.integers(4, 9), rng.uniform(0.1, 0.3)
        return self._event_clicks(
            s, rng, t, gain_db, "rail_clicks", self.event_band, count, length_s
        )

    def _anomaly_valve(self, s, rng, t, gain_db):
        # Each clip draws its extent too: how many extra rattles and how long they ring.
        f_lo = rng.uniform(3000, 4000)
        count, length_s = rng.integers(3, 8), rng.uniform(0.2, 0.8)
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
        # One added line is the machine's own recurring fault (near its defect frequency), the
        # others fall anywhere in 1.5-6 kHz.
        recurring = self.defect_hz * rng.uniform(0.94, 1.06)
        others = rng.uniform(1500, 6000, n_lines - n_removed - 1)
        for k, hz in enumerate(np.sort(np.append(others, recurring))):
            region = (*_tone_band(hz), t0, t1)
            self._add(s, f"line{k}", env * tone(t, hz, rng, drift=0.002), region, gain_db)
            regions.append(region)
        return Anomaly("lines_in_window", regions)


def id_detectability(machine_type: str, machine_id: str) -> float:
    """How much stronger than its type's typical anomaly an ID's anomalies are (mean 1 per type).

    Follows the published per-ID baseline AUCs: an ID's binormal separation
    d = sqrt(2) probit(AUC) grows with the square of the gain (a detector's squared error
    does), so the ID's gain scales with sqrt(d) (a type's ``ID_DETECTABILITY_POWER`` other
    than 1/2 where its IDs came out closer together than the published ones), relative to
    the type's mean.
    """
    power = ID_DETECTABILITY_POWER.get(machine_type, 0.5)
    probit = statistics.NormalDist().inv_cdf  # the stdlib's: no scipy.stats import per worker

    def scale(auc_pct: float) -> float:
        return float((np.sqrt(2) * probit(auc_pct / 100)) ** power)

    published = PUBLISHED_ID_AUC_PCT[machine_type]
    return scale(published[machine_id]) / np.mean([scale(v) for v in published.values()])


def clip_gain_db(
    rng: np.random.Generator, machine_type: str, machine_id: str, strength: float
) -> float:
    """One anomalous clip's drawn gain (dB): strength x type gain x ID detectability x a
    log-normal draw of mean 1 (many clips barely differ from normal, a few grossly), capped."""
    log_sd = CLIP_STRENGTH_LOG_SD_BY_TYPE.get(machine_type, CLIP_STRENGTH_LOG_SD)
    draw = rng.lognormal(-0.5 * log_sd**2, log_sd)
    typical = REALISTIC_GAIN_DB[machine_type] * id_detectability(machine_type, machine_id)
    return float(min(strength * typical * draw, MAX_GAIN_DB))
