"""The band-times-segments engine: :class:`AudioSpecificStrategy`, the seed notebook's
generator grown into the family the ``recommend`` stage fits in (several bands, full-clip
segments, widths in rows or Hz, a share of Perlin masks). Today's training strategy, drawn
exactly as the training code draws it, is :mod:`analysis.strategies.training`.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np

from analysis.strategies.base import ProcessRng, htk_mel_frequencies, resolve_shapes, to_tensor
from analysis.strategies.options import family_defaults, resolve_family
from analysis.strategies.projection import project_axis, project_maps, projection_name

# Batches up to this size are drawn mask by mask in plain Python (see runs_of_one).
PER_ITEM_MAX_BATCH = 4


def _uniform_int(low, high, u):
    """Integers uniform in [low, high] inclusive from uniforms ``u`` in [0, 1) (numpy, broadcast)."""
    return low + np.minimum((u * (high - low + 1)).astype(np.int64), high - low)


def _uniform_int_py(lo: int, hi: int, x: float) -> int:
    """:func:`_uniform_int` for one Python number (the per-item path)."""
    return lo + min(int(x * (hi - lo + 1)), hi - lo)


def _runs_to_vectors(starts: np.ndarray, lengths: np.ndarray, size: int) -> np.ndarray:
    """(B, size) bool coverage of runs [start, start + length) given as (B, K) arrays (length 0 = none)."""
    B = starts.shape[0]
    offset = (np.arange(B) * (size + 1))[:, None]
    on = (lengths > 0).ravel().astype(np.float64)
    n = B * (size + 1)
    edges = np.bincount((offset + starts).ravel(), on, n) - np.bincount(
        (offset + np.minimum(starts + lengths, size)).ravel(), on, n
    )
    return np.cumsum(edges.reshape(B, size + 1), axis=1)[:, :size] > 0.5


class AudioSpecificStrategy:
    """Bands of mel rows times time segments; defaults are the seed notebook's "current" preset.

    Each mask draws ``min_bands..max_bands`` bands (each a run of consecutive
    mel rows inside the band-position range) and one time pattern shared by
    the bands: with probability ``full_time_prob`` one segment covering
    ``min_full_coverage..max_full_coverage`` of the clip, else
    ``min_segments..max_segments`` segments of ``min_seg_len..max_seg_len``
    frames, overlapping (merged) or, with ``disjoint_segments``, separated by
    at least one frame. With probability ``perlin_prob`` the mask is a Perlin
    mask instead (``perlin_*`` options). Every mel bin and frame is reachable.

    Parameters
    ----------
    spectrogram_shape
        (n_mels, T); ``None`` takes ``n_mels`` and ``T``.
    q_shape
        (H_q, W_q) of the output; ``None`` (the default) means spectrogram size.
    n_mels, T
        Must match ``spectrogram_shape`` when both are given.
    min_band_fraction, max_band_fraction
        Band height ``max(1, int(n_mels * u))``, u uniform in this range.
        ``min_band_rows``/``max_band_rows`` (uniform integer rows) or
        ``min_band_hz``/``max_band_hz`` (uniform width in Hz, with ``fmin_hz``
        and ``fmax_hz`` giving the HTK mel scale) replace it when given.
        ``max_band_frac`` is the training code's name: 1..int(n_mels * frac) rows.
    min_segments, max_segments, min_seg_len, max_seg_len
        Segment count and length in frames (uniform, inclusive; length at most T;
        the default maximum length is T // 4).
    projection
        ``any_cell`` (default, the training code's projection) or ``nearest``
        (older path); ``resize`` is the earlier name of this argument.
    seed, generator
        An int seed, or a numpy or torch generator, for reproducible draws.
    """

    kind = "audio_specific"  # its kind in analysis.strategies.registry
    family = "audio_specific"  # the options' kind (see analysis.strategies.options)

    @classmethod
    def defaults_for(cls, n_mels: int, T: int) -> dict[str, Any]:
        """This class's default options for a (n_mels, T) spectrogram."""
        return family_defaults(cls.family, T)

    @classmethod
    def resolve(cls, n_mels: int, T: int, **given: Any) -> dict[str, Any]:
        """The checked options this class would use; raises StrategySettingError naming the option
        (:func:`analysis.strategies.options.resolve_family`)."""
        return resolve_family(cls.family, n_mels, T, **given)

    def __init__(
        self,
        spectrogram_shape: tuple[int, int] | None = None,
        q_shape: tuple[int, int] | None = None,
        n_mels: int | None = None,
        T: int | None = None,
        min_band_fraction: float | None = None,
        max_band_fraction: float | None = None,
        min_segments: int | None = None,
        max_segments: int | None = None,
        min_seg_len: int | None = None,
        max_seg_len: int | None = None,
        *,
        max_band_frac: float | None = None,
        projection: str = "any_cell",
        resize: str | None = None,
        seed: int | None = None,
        generator: Any = None,
        **options: Any,
    ) -> None:
        (H, W), self.q_shape = resolve_shapes(spectrogram_shape, q_shape, n_mels, T)
        self.spectrogram_shape, self.n_mels, self.T = (H, W), H, W
        given = {
            "min_band_fraction": min_band_fraction,
            "max_band_fraction": max_band_fraction,
            "min_segments": min_segments,
            "max_segments": max_segments,
            "min_seg_len": min_seg_len,
            "max_seg_len": max_seg_len,
            **options,
        }
        self.options = self.resolve(H, W, max_band_frac=max_band_frac, **given)
        self.projection = projection_name(resize if resize is not None else projection)
        self._rng = ProcessRng(seed, generator)
        o = self.options
        # Rows a band may occupy: [pos_lo, pos_hi), at least one row.
        self.pos_lo = min(int(math.floor(o["min_band_position"] * H)), H - 1)
        self.pos_hi = max(int(math.ceil(o["max_band_position"] * H)), self.pos_lo + 1)
        self._centres_hz = None
        if o["min_band_hz"] is not None:
            self._centres_hz = htk_mel_frequencies(H + 2, o["fmin_hz"], o["fmax_hz"])[1:-1]
            self._centres_list = self._centres_hz.tolist()
        self._perlin = None
        if o["perlin_prob"] > 0:
            from analysis.strategies.perlin import PerlinStrategy

            self._perlin = PerlinStrategy(
                (H, W),
                None,
                min_scale_exp=o["perlin_min_scale_exp"],
                max_scale_exp=o["perlin_max_scale_exp"],
                threshold=o["perlin_threshold"],
                rotate=o["perlin_rotate"],
                seed=int(self.rng.integers(2**31)) if self._rng.seeded else None,
            )

    @property
    def rng(self) -> np.random.Generator:
        """The generator this strategy draws from (see :class:`~analysis.strategies.base.ProcessRng`)."""
        return self._rng.generator

    def __getattr__(self, name: str) -> Any:
        # Options read as attributes (``strategy.max_seg_len``), as on the seed's class.
        options = self.__dict__.get("options")
        if options is not None and name in options:
            return options[name]
        raise AttributeError(name)

    # -- drawing -----------------------------------------------------------------------------
    def _band_widths(self, u: np.ndarray, low_u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Band widths (rows) and lowest rows from uniforms, each (B, max_bands)."""
        o, room = self.options, self.pos_hi - self.pos_lo
        if self._centres_hz is not None:
            c = self._centres_hz
            width_hz = o["min_band_hz"] + (o["max_band_hz"] - o["min_band_hz"]) * u
            top = c[self.pos_hi - 1]
            # The lowest row that still leaves room for the width below the range's top.
            last_low = np.searchsorted(c, top - width_hz, side="right") - 1
            last_low = np.clip(last_low, self.pos_lo, self.pos_hi - 1)
            low = _uniform_int(self.pos_lo, last_low, low_u)
            high = np.searchsorted(c, c[low] + width_hz, side="right") - 1
            width = np.clip(high - low + 1, 1, self.pos_hi - low)
            return width, low
        if o["min_band_rows"] is not None:
            width = _uniform_int(o["min_band_rows"], o["max_band_rows"], u)
        else:
            frac = o["min_band_fraction"] + (o["max_band_fraction"] - o["min_band_fraction"]) * u
            width = (self.n_mels * frac).astype(np.int64)
        width = np.clip(width, 1, room)
        return width, self.pos_lo + _uniform_int(0, room - width, low_u)

    def _segments(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Segment starts and lengths, each (B, max_segments); unused slots have length 0."""
        o, T, S = self.options, self.T, self.options["max_segments"]
        B = u.shape[0]
        n_seg = _uniform_int(o["min_segments"], S, u[:, 0])
        length = _uniform_int(o["min_seg_len"], o["max_seg_len"], u[:, 1 : 1 + S])
        place = u[:, 1 + S : 1 + 2 * S]
        active = np.arange(S)[None, :] < n_seg[:, None]
        length = np.where(active, length, 0)
        if not o["disjoint_segments"]:
            start = _uniform_int(0, T - np.maximum(length, 1), place)
        else:
            # Segments that do not fit beside the earlier ones (one-frame gaps) are dropped,
            # as a placement loop that gives up would; lengths stay in their range.
            fits = np.cumsum(length, axis=1) + np.arange(S)[None, :] <= T
            active &= fits
            length = np.where(active, length, 0)
            n_seg = active.sum(axis=1)
            slack = (T - (n_seg - 1) - length.sum(axis=1))[:, None]
            cuts = np.sort(np.where(active, _uniform_int(0, slack, place), slack), axis=1)
            before = np.cumsum(length, axis=1) - length
            start = cuts + before + np.arange(S)[None, :]
        # A full-clip segment replaces the pattern with probability full_time_prob.
        full = u[:, 1 + 2 * S] < o["full_time_prob"]
        if full.any():
            cover = (
                o["min_full_coverage"]
                + (o["max_full_coverage"] - o["min_full_coverage"]) * u[full, 2 + 2 * S]
            )
            full_len = np.clip((cover * T).astype(np.int64), 1, T)
            length[full] = 0
            length[full, 0] = full_len
            start[full, 0] = _uniform_int(0, T - full_len, u[full, 3 + 2 * S])
        return np.clip(start, 0, T - 1).reshape(B, S), length

    def _uniforms(self, batch_size: int) -> np.ndarray:
        """All the uniforms one batch of masks uses, (B, K), from a single generator call."""
        NB, S = self.options["max_bands"], self.options["max_segments"]
        return self.rng.random((int(batch_size), 1 + 2 * NB + 4 + 2 * S))

    def runs_from_uniforms(self, u: np.ndarray) -> tuple[np.ndarray, ...]:
        """Band runs (low, width: (B, max_bands)) and time runs (start, length: (B, max_segments))
        of a batch of masks; unused slots have width or length 0. Vectorized over the batch."""
        o = self.options
        NB = o["max_bands"]
        n_bands = _uniform_int(o["min_bands"], NB, u[:, 0])
        width, low = self._band_widths(u[:, 1 : 1 + NB], u[:, 1 + NB : 1 + 2 * NB])
        width = np.where(np.arange(NB)[None, :] < n_bands[:, None], width, 0)
        start, length = self._segments(u[:, 1 + 2 * NB :])
        return low, width, start, length

    def runs_of_one(self, u: list[float]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The same runs as :meth:`runs_from_uniforms` for one mask, in plain Python.

        Training calls a strategy once per item (``strategy(1, device)``), where a
        vectorized numpy path costs more in per-call overhead than the work itself.
        This is the same arithmetic on Python numbers (a test checks that both
        paths give identical runs from the same uniforms).

        Returns
        -------
        bands, segments
            (lowest row, rows) of every band and (start, frames) of every time segment.
        """
        return self._bands_of_one(u), self._segments_of_one(u[1 + 2 * self.options["max_bands"] :])

    def _bands_of_one(self, u: list[float]) -> list[tuple[int, int]]:
        o, NB, room = self.options, self.options["max_bands"], self.pos_hi - self.pos_lo
        bands = []
        for k in range(_uniform_int_py(o["min_bands"], NB, u[0])):
            w_u, low_u = u[1 + k], u[1 + NB + k]
            if self._centres_hz is not None:
                c = self._centres_list
                width_hz = o["min_band_hz"] + (o["max_band_hz"] - o["min_band_hz"]) * w_u
                last = bisect.bisect_right(c, c[self.pos_hi - 1] - width_hz) - 1
                last = min(max(last, self.pos_lo), self.pos_hi - 1)
                low = _uniform_int_py(self.pos_lo, last, low_u)
                high = bisect.bisect_right(c, c[low] + width_hz) - 1
                bands.append((low, min(max(high - low + 1, 1), self.pos_hi - low)))
                continue
            if o["min_band_rows"] is not None:
                width = _uniform_int_py(o["min_band_rows"], o["max_band_rows"], w_u)
            else:
                frac = (
                    o["min_band_fraction"] + (o["max_band_fraction"] - o["min_band_fraction"]) * w_u
                )
                width = int(self.n_mels * frac)
            width = min(max(width, 1), room)
            bands.append((self.pos_lo + _uniform_int_py(0, room - width, low_u), width))
        return bands

    def _segments_of_one(self, t: list[float]) -> list[tuple[int, int]]:
        o, T, S = self.options, self.T, self.options["max_segments"]
        if t[1 + 2 * S] < o["full_time_prob"]:
            cover = (
                o["min_full_coverage"]
                + (o["max_full_coverage"] - o["min_full_coverage"]) * t[2 + 2 * S]
            )
            full_len = min(max(int(cover * T), 1), T)
            return [(_uniform_int_py(0, T - full_len, t[3 + 2 * S]), full_len)]
        n_seg = _uniform_int_py(o["min_segments"], S, t[0])
        lengths = [_uniform_int_py(o["min_seg_len"], o["max_seg_len"], x) for x in t[1 : 1 + n_seg]]
        place = t[1 + S : 1 + S + n_seg]
        if not o["disjoint_segments"]:
            starts = [
                _uniform_int_py(0, T - max(n, 1), x) for n, x in zip(lengths, place, strict=True)
            ]
            return [(min(max(s, 0), T - 1), n) for s, n in zip(starts, lengths, strict=True)]
        used, kept = 0, 0
        for k, n in enumerate(lengths):  # drop the segments that do not fit (see _segments)
            if used + n + k > T:
                break
            used, kept = used + n, k + 1
        lengths, place = lengths[:kept], place[:kept]
        slack = T - (kept - 1) - used
        cuts = sorted(_uniform_int_py(0, slack, x) for x in place)
        segs, before = [], 0
        for k, (cut, n) in enumerate(zip(cuts, lengths, strict=True)):
            segs.append((min(max(cut + before + k, 0), T - 1), n))
            before += n
        return segs

    def draw_factors(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Mel-row and frame vectors of ``batch_size`` band masks at spectrogram size.

        Returns
        -------
        rows, frames
            Bool arrays (B, n_mels) and (B, T); each mask is their outer product.
        """
        low, width, start, length = self.runs_from_uniforms(self._uniforms(batch_size))
        return _runs_to_vectors(low, width, self.n_mels), _runs_to_vectors(start, length, self.T)

    def full_size(self, batch_size: int) -> np.ndarray:
        """(B, n_mels, T) bool masks at spectrogram size."""
        B = int(batch_size)
        perlin = self.rng.random(B) < self.options["perlin_prob"]
        rows, frames = self.draw_factors(B)
        masks = rows[:, :, None] & frames[:, None, :]
        if perlin.any():
            masks[perlin] = self._perlin.full_size(int(perlin.sum()))
        return masks

    def _call_per_item(self, batch_size: int) -> np.ndarray:
        """(B, 1, H_q, W_q) float32 masks drawn one by one (the fast path for tiny batches)."""
        H, W = self.spectrogram_shape
        out = np.zeros((batch_size, 1, *self.q_shape), dtype=np.float32)
        for b, u in enumerate(self._uniforms(batch_size).tolist()):
            bands, segs = self.runs_of_one(u)
            if self.q_shape == (H, W) and len(bands) * len(segs) <= 8:
                for low, width in bands:
                    for start, length in segs:
                        out[b, 0, low : low + width, start : start + length] = 1.0
                continue
            rows, frames = np.zeros(H, dtype=bool), np.zeros(W, dtype=bool)
            for low, width in bands:
                rows[low : low + width] = True
            for start, length in segs:
                frames[start : start + length] = True
            rows_q = project_axis(rows, self.q_shape[0], self.projection, axis=0)
            frames_q = project_axis(frames, self.q_shape[1], self.projection, axis=0)
            out[b, 0] = np.outer(rows_q, frames_q)
        return out

    def __call__(self, batch_size: int, device: Any = "cpu"):
        """Masks of shape (B, 1, H_q, W_q), float32 0/1, on ``device`` (a torch tensor)."""
        if self._perlin is not None:
            small = project_maps(self.full_size(batch_size), self.q_shape, self.projection)
            return to_tensor(small[:, None].astype(np.float32), device)
        if batch_size <= PER_ITEM_MAX_BATCH:
            return to_tensor(self._call_per_item(int(batch_size)), device)
        # Projecting an outer product equals the outer product of the projected factors
        # (for both projections), so only the two vectors are projected.
        rows, frames = self.draw_factors(batch_size)
        rows_q = project_axis(rows, self.q_shape[0], self.projection, axis=1)
        frames_q = project_axis(frames, self.q_shape[1], self.projection, axis=1)
        out = np.multiply(rows_q[:, None, :, None], frames_q[:, None, None, :], dtype=np.float32)
        return to_tensor(out, device)

    def changed_options(self) -> dict[str, Any]:
        """The options that differ from this class's defaults (for paste-ready calls)."""
        defaults = self.resolve(self.n_mels, self.T)
        return {k: v for k, v in self.options.items() if v != defaults[k]}

    def describe(self) -> str:
        """A short text for the report: the kind and the options that differ from its defaults."""
        changed = self.changed_options()
        words = ", ".join(f"{k}={v}" for k, v in changed.items()) or "the seed notebook's defaults"
        return f"{self.kind}: bands of mel rows x time segments; {words}"
