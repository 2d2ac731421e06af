"""Mask strategies: every way this project draws synthetic anomaly masks, behind one seam.

The call convention is the training code's (DESIGN §8): a strategy is built as
``Strategy(spectrogram_shape, q_shape, n_mels, T, **options)`` (``q_shape`` and
``spectrogram_shape`` may be ``None``: spectrogram size) and called as
``strategy(batch_size, device)``, returning a float ``(B, 1, H_q, W_q)`` 0/1
tensor. Every strategy here also offers ``full_size(batch_size)``, the masks
as a ``(B, n_mels, T)`` bool array, which is what the ``masks`` stage measures.

The family:

* :class:`AudioSpecificStrategy`: bands of mel rows times time segments. One
  engine covers the seed notebook's generator (its defaults), today's training
  strategy (:class:`TrainingAudioStrategy`, same engine, the training code's
  defaults) and the richer space the ``recommend`` stage fits in: several
  bands at once, a full-clip segment with probability ``full_time_prob``,
  disjoint or overlapping segments, band widths as a mel fraction, in rows or
  in Hz, and a share of Perlin masks.
* :class:`PerlinStrategy`: the DSR/DRAEM baseline, thresholded rotated Perlin noise.
* :class:`ImportedStrategy`: any user class or factory, by import path.
* :class:`MachineSpecificStrategy`: one fitted strategy per machine type, read
  from ``build/recommendations.json``.

Projection onto a latent grid: ``any_cell`` (a latent cell is masked when any
spectrogram cell under it is; the training code's average-pool-then-``> 0``)
is the default; ``nearest`` (sample every k-th row and column) is the older
path, kept to show what it loses.
"""

from __future__ import annotations

import bisect
import importlib
import math
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PROJECTIONS: tuple[str, ...] = ("any_cell", "nearest")
# ``max_pool`` is the name earlier versions of this project used for ``any_cell``.
_PROJECTION_ALIASES = {"max_pool": "any_cell"}


# Batches up to this size are drawn mask by mask in plain Python (see runs_of_one).
PER_ITEM_MAX_BATCH = 4
DEFAULT_SPECTROGRAM_SHAPE = (128, 320)


class OptionError(ValueError):
    """A strategy option has an impossible value; ``option`` names it."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


class StrategyError(ValueError):
    """A strategy could not be built or returned something that is not a mask."""


def projection_name(method: str) -> str:
    """The canonical projection name (``max_pool`` is accepted for ``any_cell``)."""
    name = _PROJECTION_ALIASES.get(method, method)
    if name not in PROJECTIONS:
        raise ValueError(f"projection {method!r} is not one of {', '.join(PROJECTIONS)}")
    return name


def project_axis(maps: np.ndarray, size: int, method: str, axis: int) -> np.ndarray:
    """Project bool ``maps`` to ``size`` cells along ``axis``.

    ``nearest`` keeps source index ``floor(i * L / size)`` (what
    ``F.interpolate(mode="nearest")`` picks); ``any_cell`` marks an output cell
    when any input cell of its window ``[floor(i L / size), ceil((i + 1) L / size))``
    is set (adaptive max pooling; the training code's stride average pool then
    ``> 0`` when L is a multiple of size).
    """
    length = maps.shape[axis]
    if size == length:
        return maps
    method = projection_name(method)
    if method == "nearest":
        return np.take(maps, (np.arange(size) * length) // size, axis=axis)
    moved = np.moveaxis(maps, axis, -1)
    if length % size == 0:
        out = moved.reshape(*moved.shape[:-1], size, length // size).any(axis=-1)
    else:
        counts = np.concatenate(
            [np.zeros((*moved.shape[:-1], 1), np.int64), np.cumsum(moved, axis=-1)], axis=-1
        )
        i = np.arange(size)
        starts, ends = (i * length) // size, -((-(i + 1) * length) // size)
        out = (counts[..., ends] - counts[..., starts]) > 0
    return np.moveaxis(out, -1, axis)


def project_maps(maps: np.ndarray, q_shape: tuple[int, int], method: str) -> np.ndarray:
    """Project (..., n_mels, T) bool maps onto a (H_q, W_q) latent grid (see :func:`project_axis`)."""
    out = project_axis(np.asarray(maps, dtype=bool), int(q_shape[0]), method, axis=-2)
    return project_axis(out, int(q_shape[1]), method, axis=-1)


def _shapes(spectrogram_shape, q_shape, n_mels, T) -> tuple[tuple[int, int], tuple[int, int]]:
    """Resolve the training code's (spectrogram_shape, q_shape, n_mels, T) convention."""
    if spectrogram_shape is None:
        if (n_mels is None) != (T is None):
            raise ValueError("give spectrogram_shape, or both n_mels and T")
        # Nothing given: the detector's (128 mel bins, 320 frames).
        spectrogram_shape = DEFAULT_SPECTROGRAM_SHAPE if n_mels is None else (n_mels, T)
    H, W = (int(x) for x in spectrogram_shape)
    if (n_mels is not None and int(n_mels) != H) or (T is not None and int(T) != W):
        raise ValueError(
            f"n_mels x T = {n_mels} x {T} does not match spectrogram_shape {spectrogram_shape}"
        )
    q = (H, W) if q_shape is None else tuple(int(x) for x in q_shape)
    if len(q) != 2 or min(q) < 1 or q[0] > H or q[1] > W:
        raise ValueError(f"q_shape {q_shape} must be two sizes within spectrogram_shape {(H, W)}")
    return (H, W), q


def _numpy_rng(seed: int | None, generator: Any) -> np.random.Generator:
    """A numpy Generator from an int seed, a numpy Generator or a torch.Generator."""
    if generator is not None and seed is not None:
        raise ValueError("give either seed or generator, not both")
    if isinstance(generator, np.random.Generator):
        return generator
    if generator is not None:  # a torch.Generator: take one draw of it as the seed
        import torch

        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return np.random.default_rng(seed)


def _to_tensor(masks: np.ndarray, device: Any):
    import torch

    return torch.from_numpy(masks).to(device)


def _check_range(name: str, lo, hi, floor, ceiling, open_low: bool = False) -> None:
    below = lo <= floor if open_low else lo < floor
    if below or hi > ceiling:
        low_text = f"({floor}" if open_low else f"[{floor}"
        raise OptionError(
            f"min_{name}" if below else f"max_{name}",
            f"min_{name}/max_{name} = {lo}/{hi} must lie in {low_text}, {ceiling}]",
        )
    if lo > hi:
        raise OptionError(f"min_{name}", f"min_{name} = {lo} is above max_{name} = {hi}")


def _uniform_int(low, high, u):
    """Integers uniform in [low, high] inclusive from uniforms ``u`` in [0, 1) (numpy, broadcast)."""
    return low + np.minimum((u * (high - low + 1)).astype(np.int64), high - low)


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


# Options of the band-times-segments family, with the seed notebook's "current" behaviour as
# defaults. ``None`` for max_seg_len means T // 4; the band width mode is chosen by which of
# band_fraction / band_rows / band_hz is given (fraction when none is).
SEED_DEFAULTS: dict[str, Any] = {
    "min_band_fraction": 0.05,
    "max_band_fraction": 0.15,
    "min_segments": 10,
    "max_segments": 160,
    "min_seg_len": 1,
    "max_seg_len": None,
    "min_band_rows": None,
    "max_band_rows": None,
    "min_band_hz": None,
    "max_band_hz": None,
    "min_bands": 1,
    "max_bands": 1,
    "min_band_position": 0.0,
    "max_band_position": 1.0,
    "full_time_prob": 0.0,
    "min_full_coverage": 0.85,
    "max_full_coverage": 1.0,
    "disjoint_segments": False,
    "perlin_prob": 0.0,
    "perlin_min_scale_exp": 0,
    "perlin_max_scale_exp": 6,
    "perlin_threshold": 0.5,
    "perlin_rotate": True,
    "fmin_hz": 0.0,
    "fmax_hz": 8000.0,
}
OPTION_NAMES: tuple[str, ...] = tuple(SEED_DEFAULTS)
# A minimum that the caller did not give follows a smaller maximum that it did give, so
# ``max_segments=5`` alone means 5 at most rather than an error about the default minimum.
_MIN_FOLLOWS_MAX = {
    "min_band_fraction": "max_band_fraction",
    "min_segments": "max_segments",
    "min_seg_len": "max_seg_len",
    "min_bands": "max_bands",
}


def resolve_options(
    given: dict[str, Any], defaults: dict[str, Any], n_mels: int, T: int
) -> dict[str, Any]:
    """Merge ``given`` options over ``defaults`` and check them; raise ValueError naming the option.

    Used by the strategy classes and by the params check (so a preset fails
    before any stage works), so the rules live in one place.
    """
    unknown = sorted(set(given) - set(OPTION_NAMES))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(OPTION_NAMES)}")
    o = {**defaults, **{k: v for k, v in given.items() if v is not None}}
    if o["max_seg_len"] is None:
        o["max_seg_len"] = max(1, T // 4)
    for lo, hi in _MIN_FOLLOWS_MAX.items():
        if lo not in given and hi in given and o[lo] > o[hi]:
            o[lo] = o[hi]
    if (o["min_band_rows"] is None) != (o["max_band_rows"] is None):
        raise OptionError("min_band_rows", "min_band_rows and max_band_rows go together")
    if (o["min_band_hz"] is None) != (o["max_band_hz"] is None):
        raise OptionError("min_band_hz", "min_band_hz and max_band_hz go together")
    if o["min_band_rows"] is not None and o["min_band_hz"] is not None:
        raise OptionError("min_band_hz", "give band widths in rows or in Hz, not both")
    _check_range("band_fraction", o["min_band_fraction"], o["max_band_fraction"], 0.0, 1.0, True)
    if o["min_band_rows"] is not None:
        _check_range("band_rows", o["min_band_rows"], o["max_band_rows"], 1, n_mels)
    if o["min_band_hz"] is not None:
        _check_range("band_hz", o["min_band_hz"], o["max_band_hz"], 0.0, math.inf, True)
    _check_range("bands", o["min_bands"], o["max_bands"], 1, max(1, n_mels // 2))
    _check_range("segments", o["min_segments"], o["max_segments"], 1, math.inf)
    _check_range("seg_len", o["min_seg_len"], o["max_seg_len"], 1, T)
    _check_range("band_position", o["min_band_position"], o["max_band_position"], 0.0, 1.0)
    if o["min_band_position"] == o["max_band_position"]:
        raise OptionError("min_band_position", "min_band_position must be below max_band_position")
    _check_range("full_coverage", o["min_full_coverage"], o["max_full_coverage"], 0.0, 1.0, True)
    for name in ("full_time_prob", "perlin_prob"):
        if not 0.0 <= o[name] <= 1.0:
            raise OptionError(name, f"{name} = {o[name]} must lie in [0, 1]")
    if o["disjoint_segments"] and o["min_segments"] * (o["min_seg_len"] + 1) - 1 > T:
        raise OptionError(
            "min_segments",
            f"min_segments = {o['min_segments']} disjoint segments of min_seg_len = "
            f"{o['min_seg_len']} frames cannot fit in T = {T} frames",
        )
    _check_range("perlin_scale_exp", o["perlin_min_scale_exp"], o["perlin_max_scale_exp"], 0, 10)
    if not -1.0 <= o["perlin_threshold"] < 1.0:
        raise OptionError(
            "perlin_threshold", f"perlin_threshold = {o['perlin_threshold']} must lie in [-1, 1)"
        )
    if o["fmin_hz"] >= o["fmax_hz"]:
        raise ValueError(f"fmin_hz = {o['fmin_hz']} must be below fmax_hz = {o['fmax_hz']}")
    return o


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

    @classmethod
    def defaults_for(cls, n_mels: int, T: int) -> dict[str, Any]:
        """This class's default options for a (n_mels, T) spectrogram."""
        return SEED_DEFAULTS

    @classmethod
    def resolve(cls, n_mels: int, T: int, **given: Any) -> dict[str, Any]:
        """The checked options this class would use; raises ValueError/TypeError naming the option.

        Needs no torch, so ``params.yaml`` presets are checked with it before any stage works.
        """
        given = {k: v for k, v in given.items() if v is not None}
        frac = given.pop("max_band_frac", None)
        if frac is not None:  # the training code's band: 1..int(n_mels * frac) rows
            given.update(min_band_rows=1, max_band_rows=max(1, int(n_mels * float(frac))))
        return resolve_options(given, cls.defaults_for(n_mels, T), n_mels, T)

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
        (H, W), self.q_shape = _shapes(spectrogram_shape, q_shape, n_mels, T)
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
        self.rng = _numpy_rng(seed, generator)
        o = self.options
        # Rows a band may occupy: [pos_lo, pos_hi), at least one row.
        self.pos_lo = min(int(math.floor(o["min_band_position"] * H)), H - 1)
        self.pos_hi = max(int(math.ceil(o["max_band_position"] * H)), self.pos_lo + 1)
        self._centres_hz = None
        if o["min_band_hz"] is not None:
            import librosa

            self._centres_hz = librosa.mel_frequencies(
                n_mels=H + 2, fmin=o["fmin_hz"], fmax=o["fmax_hz"], htk=True
            )[1:-1]
            self._centres_list = self._centres_hz.tolist()
        self._perlin = None
        if o["perlin_prob"] > 0:
            self._perlin = PerlinStrategy(
                (H, W),
                None,
                min_scale_exp=o["perlin_min_scale_exp"],
                max_scale_exp=o["perlin_max_scale_exp"],
                threshold=o["perlin_threshold"],
                rotate=o["perlin_rotate"],
                seed=int(self.rng.integers(2**31)),
            )

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
        """
        o, T, H = self.options, self.T, self.n_mels
        NB, S = o["max_bands"], o["max_segments"]

        def uniform_int(lo: int, hi: int, x: float) -> int:
            return lo + min(int(x * (hi - lo + 1)), hi - lo)

        room = self.pos_hi - self.pos_lo
        bands = []
        for k in range(uniform_int(o["min_bands"], NB, u[0])):
            w_u, low_u = u[1 + k], u[1 + NB + k]
            if self._centres_hz is not None:
                c = self._centres_list
                width_hz = o["min_band_hz"] + (o["max_band_hz"] - o["min_band_hz"]) * w_u
                last = bisect.bisect_right(c, c[self.pos_hi - 1] - width_hz) - 1
                last = min(max(last, self.pos_lo), self.pos_hi - 1)
                low = uniform_int(self.pos_lo, last, low_u)
                high = bisect.bisect_right(c, c[low] + width_hz) - 1
                bands.append((low, min(max(high - low + 1, 1), self.pos_hi - low)))
                continue
            if o["min_band_rows"] is not None:
                width = uniform_int(o["min_band_rows"], o["max_band_rows"], w_u)
            else:
                frac = (
                    o["min_band_fraction"] + (o["max_band_fraction"] - o["min_band_fraction"]) * w_u
                )
                width = int(H * frac)
            width = min(max(width, 1), room)
            bands.append((self.pos_lo + uniform_int(0, room - width, low_u), width))

        t = u[1 + 2 * NB :]
        if t[1 + 2 * S] < o["full_time_prob"]:
            cover = (
                o["min_full_coverage"]
                + (o["max_full_coverage"] - o["min_full_coverage"]) * t[2 + 2 * S]
            )
            full_len = min(max(int(cover * T), 1), T)
            return bands, [(uniform_int(0, T - full_len, t[3 + 2 * S]), full_len)]
        n_seg = uniform_int(o["min_segments"], S, t[0])
        lengths = [uniform_int(o["min_seg_len"], o["max_seg_len"], x) for x in t[1 : 1 + n_seg]]
        place = t[1 + S : 1 + S + n_seg]
        if not o["disjoint_segments"]:
            starts = [uniform_int(0, T - max(n, 1), x) for n, x in zip(lengths, place, strict=True)]
            return bands, [(min(max(s, 0), T - 1), n) for s, n in zip(starts, lengths, strict=True)]
        used, kept = 0, 0
        for k, n in enumerate(lengths):  # drop the segments that do not fit (see _segments)
            if used + n + k > T:
                break
            used, kept = used + n, k + 1
        lengths, place = lengths[:kept], place[:kept]
        slack = T - (kept - 1) - used
        cuts = sorted(uniform_int(0, slack, x) for x in place)
        segs, before = [], 0
        for k, (cut, n) in enumerate(zip(cuts, lengths, strict=True)):
            segs.append((min(max(cut + before + k, 0), T - 1), n))
            before += n
        return bands, segs

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
            return _to_tensor(small[:, None].astype(np.float32), device)
        if batch_size <= PER_ITEM_MAX_BATCH:
            return _to_tensor(self._call_per_item(int(batch_size)), device)
        # Projecting an outer product equals the outer product of the projected factors
        # (for both projections), so only the two vectors are projected.
        rows, frames = self.draw_factors(batch_size)
        rows_q = project_axis(rows, self.q_shape[0], self.projection, axis=1)
        frames_q = project_axis(frames, self.q_shape[1], self.projection, axis=1)
        out = np.multiply(rows_q[:, None, :, None], frames_q[:, None, None, :], dtype=np.float32)
        return _to_tensor(out, device)

    def describe(self) -> dict[str, Any]:
        """The options that differ from this class's defaults (for reports and paste-ready calls)."""
        defaults = self.resolve(self.n_mels, self.T)
        return {k: v for k, v in self.options.items() if v != defaults[k]}


# Today's training strategy (DESIGN §8): no minimum band width, 1..int(n_mels * 0.1) rows; with
# probability 0.3 one segment over 85-100 % of the clip, else 2..5 disjoint segments of
# T/10..T/3 frames; no Perlin masks.
TRAINING_DEFAULTS: dict[str, Any] = {
    **SEED_DEFAULTS,
    "min_segments": 2,
    "max_segments": 5,
    "min_seg_len": None,  # T // 10, set per shape
    "max_seg_len": None,  # T // 3, set per shape
    "full_time_prob": 0.3,
    "disjoint_segments": True,
}


class TrainingAudioStrategy(AudioSpecificStrategy):
    """The same engine with today's training-code defaults (``perlin_prob`` 0, ``full_time_prob``
    0.3, ``max_band_frac`` 0.1, ``max_segments`` 5, segments of T/10..T/3 frames, disjoint).

    A drop-in for the training code's strategy: same positional arguments, same
    keyword names, same call.
    """

    @classmethod
    def defaults_for(cls, n_mels: int, T: int) -> dict[str, Any]:
        return {**TRAINING_DEFAULTS, "min_seg_len": max(1, T // 10), "max_seg_len": max(1, T // 3)}

    @classmethod
    def resolve(cls, n_mels: int, T: int, **given: Any) -> dict[str, Any]:
        widths = {f"{e}_band_{u}" for e in ("min", "max") for u in ("fraction", "rows", "hz")}
        if not {k for k, v in given.items() if v is not None} & {"max_band_frac", *widths}:
            given["max_band_frac"] = 0.1
        return super().resolve(n_mels, T, **given)


class PerlinStrategy:
    """The DSR/DRAEM baseline: thresholded 2-D Perlin noise, optionally rotated.

    The lattice has ``2**k`` cells per axis, k drawn independently per axis in
    ``[min_scale_exp, max_scale_exp)`` as in DRAEM (``max`` itself only when
    both are equal); cells above ``threshold`` are masked.
    """

    def __init__(
        self,
        spectrogram_shape: tuple[int, int] | None = None,
        q_shape: tuple[int, int] | None = None,
        n_mels: int | None = None,
        T: int | None = None,
        *,
        min_scale_exp: int = 0,
        max_scale_exp: int = 6,
        threshold: float = 0.5,
        rotate: bool = True,
        projection: str = "any_cell",
        resize: str | None = None,
        seed: int | None = None,
        generator: Any = None,
    ) -> None:
        import torch

        if not 0 <= min_scale_exp <= max_scale_exp:
            raise ValueError(
                f"need 0 <= min_scale_exp <= max_scale_exp, got {min_scale_exp}, {max_scale_exp}"
            )
        self.spectrogram_shape, self.q_shape = _shapes(spectrogram_shape, q_shape, n_mels, T)
        self.min_scale_exp, self.max_scale_exp = int(min_scale_exp), int(max_scale_exp)
        self.threshold, self.rotate = float(threshold), bool(rotate)
        self.projection = projection_name(resize if resize is not None else projection)
        if isinstance(generator, torch.Generator) and seed is None:
            self.generator = generator
        else:
            self.generator = torch.Generator().manual_seed(
                int(_numpy_rng(seed, generator).integers(2**62))
            )

    def full_size(self, batch_size: int) -> np.ndarray:
        """(B, n_mels, T) bool masks at spectrogram size."""
        import torch
        import torch.nn.functional as F

        g, (H, W) = self.generator, self.spectrogram_shape
        hi = max(self.max_scale_exp, self.min_scale_exp + 1)
        exps = torch.randint(self.min_scale_exp, hi, (batch_size, 2), generator=g)
        angles = (torch.rand(batch_size, generator=g) * 180 - 90) * math.pi / 180
        noise = torch.empty(batch_size, H, W)
        for ey, ex in torch.unique(exps, dim=0).tolist():  # one pass per lattice size, not per mask
            idx = torch.nonzero((exps[:, 0] == ey) & (exps[:, 1] == ex)).flatten()
            res = (min(2**ey, H), min(2**ex, W))
            noise[idx] = perlin_noise((H, W), res, idx.numel(), g)
        if self.rotate:
            grid = rotation_grid(angles, H, W)
            noise = F.grid_sample(noise[:, None], grid, mode="bilinear", align_corners=False)[:, 0]
        return (noise > self.threshold).numpy()

    def __call__(self, batch_size: int, device: Any = "cpu"):
        small = project_maps(self.full_size(batch_size), self.q_shape, self.projection)
        return _to_tensor(small[:, None].astype(np.float32), device)


def rotation_grid(angles, H: int, W: int):
    """``F.affine_grid`` of pure rotations by ``angles`` (align_corners=False), (B, H, W, 2).

    Written out as two broadcast products: torch's affine_grid took a third of a
    Perlin draw's time for the same numbers.
    """
    import torch

    xs = (torch.arange(W, dtype=torch.float32) * 2 + 1) / W - 1
    ys = ((torch.arange(H, dtype=torch.float32) * 2 + 1) / H - 1)[:, None]
    cos, sin = torch.cos(angles)[:, None, None], torch.sin(angles)[:, None, None]
    return torch.stack([cos * xs - sin * ys, sin * xs + cos * ys], dim=-1)


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], batch: int, generator):
    """(batch, H, W) gradient (Perlin) noise on a ``res`` lattice, about in [-1, 1] (torch).

    When the lattice divides the map (powers of two on 128 x 320, the usual
    case), every lattice cell is a block of the same size, and the noise is
    computed on a (batch, ry, h, rx, w) view where each corner's gradient is
    broadcast over its block instead of gathered per cell (about 3x faster).
    Other shapes take :func:`perlin_noise_gathered`, the plain definition.
    """
    import torch

    H, W = shape
    ry, rx = res
    grads = 2 * math.pi * torch.rand(batch, ry + 1, rx + 1, generator=generator)
    gy, gx = torch.sin(grads), torch.cos(grads)
    if H % ry or W % rx:
        return perlin_noise_gathered(shape, res, gy, gx)
    h, w = H // ry, W // rx
    fy = (torch.arange(h, dtype=torch.float32) / h).view(1, 1, h, 1, 1)
    fx = (torch.arange(w, dtype=torch.float32) / w).view(1, 1, 1, 1, w)

    def corner(dy: int, dx: int):
        cell = (slice(None), slice(dy, dy + ry), None, slice(dx, dx + rx), None)
        return gy[cell] * (fy - dy) + gx[cell] * (fx - dx)

    uy, ux = _fade(fy), _fade(fx)
    top = torch.lerp(corner(0, 0), corner(0, 1), ux)
    bottom = torch.lerp(corner(1, 0), corner(1, 1), ux)
    return (math.sqrt(2) * torch.lerp(top, bottom, uy)).reshape(batch, H, W)


def _fade(t):
    return 6 * t**5 - 15 * t**4 + 10 * t**3


def perlin_noise_gathered(shape: tuple[int, int], res: tuple[int, int], gy, gx):
    """Perlin noise from corner gradients ``gy``, ``gx`` (batch, ry + 1, rx + 1), gathering
    each pixel's four corners: any shape."""
    import torch

    H, W = shape
    ry, rx = res
    py = torch.arange(H, dtype=torch.float32) * ry / H
    px = torch.arange(W, dtype=torch.float32) * rx / W
    iy, ix = py.floor().long(), px.floor().long()
    fy, fx = (py - iy)[:, None], (px - ix)[None, :]

    def corner(dy: int, dx: int):
        cy, cx = (iy + dy)[:, None], (ix + dx)[None, :]
        return gy[:, cy, cx] * (fy - dy) + gx[:, cy, cx] * (fx - dx)

    uy, ux = _fade(fy), _fade(fx)
    top = torch.lerp(corner(0, 0), corner(0, 1), ux)
    bottom = torch.lerp(corner(1, 0), corner(1, 1), ux)
    return math.sqrt(2) * torch.lerp(top, bottom, uy)


def load_target(target: str, path: str | Path | None = None) -> Callable:
    """The object named ``"package.module:Name"``, importing from ``path`` first when given."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise StrategyError(f"target {target!r} must look like 'module.path:Name'")
    if path is not None:
        folder = str(Path(path).resolve())
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - any import failure is the user's to see
        raise StrategyError(f"cannot import {module_name!r}: {type(err).__name__}: {err}") from err
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise StrategyError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise StrategyError(f"{target!r} is not a class or function")
    return obj


def seed_everything(seed: int) -> None:
    """Seed the global RNGs a black-box strategy may use (python, numpy, torch)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - black-box strategies may use the legacy global RNG
    torch.manual_seed(seed)


class ImportedStrategy:
    """A user's strategy by import path, treated as a black box.

    ``target`` is a class or factory function called as
    ``target(spectrogram_shape, None, n_mels, T, **kwargs)`` (the training
    code's convention: ``q_shape=None`` asks for spectrogram size); the object
    it returns is called as ``obj(batch_size, "cpu")`` and must return
    (B, 1, n_mels, T) 0/1 values (a tensor or an array). Global RNGs are seeded
    before construction, so draws are reproducible when the strategy uses them.
    """

    def __init__(
        self,
        target: str,
        spectrogram_shape: tuple[int, int],
        kwargs: dict[str, Any] | None = None,
        path: str | Path | None = None,
        projection: str = "any_cell",
        q_shape: tuple[int, int] | None = None,
        seed: int = 0,
        name: str | None = None,
    ) -> None:
        self.name = name or target
        self.spectrogram_shape, self.q_shape = _shapes(spectrogram_shape, q_shape, None, None)
        self.projection = projection_name(projection)
        factory = load_target(target, path)
        seed_everything(seed)
        H, W = self.spectrogram_shape
        try:
            self.strategy = factory((H, W), None, H, W, **(kwargs or {}))
        except Exception as err:  # noqa: BLE001
            raise StrategyError(
                f"preset {self.name!r}: building {target} failed: {type(err).__name__}: {err}"
            ) from err
        if not callable(self.strategy):
            raise StrategyError(
                f"preset {self.name!r}: {target} did not return a callable strategy"
            )

    def full_size(self, batch_size: int) -> np.ndarray:
        """(B, n_mels, T) bool masks, checked for shape and 0/1 values."""
        try:
            out = self.strategy(int(batch_size), "cpu")
        except Exception as err:  # noqa: BLE001
            raise StrategyError(
                f"preset {self.name!r}: the strategy raised {type(err).__name__}: {err}"
            ) from err
        if hasattr(out, "detach"):
            out = out.detach().cpu().numpy()
        out = np.asarray(out)
        want = (int(batch_size), 1, *self.spectrogram_shape)
        if out.shape != want:
            raise StrategyError(
                f"preset {self.name!r}: the strategy returned shape {tuple(out.shape)}, "
                f"expected {want} (batch, 1, n_mels, T)"
            )
        values = np.unique(out)
        if not np.all(np.isin(values, (0, 1))):
            raise StrategyError(
                f"preset {self.name!r}: the strategy returned values other than 0 and 1 "
                f"(e.g. {values[~np.isin(values, (0, 1))][:3].tolist()})"
            )
        return out[:, 0].astype(bool)

    def __call__(self, batch_size: int, device: Any = "cpu"):
        small = project_maps(self.full_size(batch_size), self.q_shape, self.projection)
        return _to_tensor(small[:, None].astype(np.float32), device)


FAMILY_KINDS = {"audio_specific": AudioSpecificStrategy, "training_audio": TrainingAudioStrategy}


def build_strategy(
    preset: dict[str, Any],
    spectrogram_shape: tuple[int, int],
    q_shape: tuple[int, int] | None = None,
    projection: str = "any_cell",
    seed: int | None = None,
    name: str | None = None,
):
    """A strategy from a ``masks.presets`` entry or a fitted recommendation (``kind`` decides)."""
    kind = preset.get("kind", "audio_specific")
    settings = {k: v for k, v in preset.items() if k != "kind"}
    if kind == "perlin":
        return PerlinStrategy(
            spectrogram_shape, q_shape, projection=projection, seed=seed, **settings
        )
    if kind == "python":
        return ImportedStrategy(
            settings["target"],
            spectrogram_shape,
            settings.get("kwargs"),
            settings.get("path"),
            projection,
            q_shape,
            seed=0 if seed is None else seed,
            name=name,
        )
    return FAMILY_KINDS[kind](
        spectrogram_shape, q_shape, projection=projection, seed=seed, **settings
    )


class MachineSpecificStrategy:
    """One fitted strategy per machine type, from ``build/recommendations.json``.

    Built with the training code's convention plus ``machine_type``; called as
    ``strategy(batch_size, device)`` for the machine type given at construction,
    or ``strategy(batch_size, device, machine_type="fan")``. A machine type
    whose row had too little evidence for a fit uses ``fallback`` (today's
    training strategy unless given), and :attr:`fallback_types` lists them.
    """

    def __init__(
        self,
        spectrogram_shape: tuple[int, int] | None = None,
        q_shape: tuple[int, int] | None = None,
        n_mels: int | None = None,
        T: int | None = None,
        *,
        machine_type: str | None = None,
        recommendations: str | Path = "build/recommendations.json",
        fallback: Any = None,
        projection: str = "any_cell",
        seed: int | None = None,
    ) -> None:
        import json

        shape, self.q_shape = _shapes(spectrogram_shape, q_shape, n_mels, T)
        rows = json.loads(Path(recommendations).read_text())["rows"]
        rng = _numpy_rng(seed, None)
        self.strategies: dict[str, Any] = {}
        self.fallback_types: list[str] = []
        self.machine_type = machine_type
        for row in rows:
            if row["machine_id"] != "all":
                continue
            if row.get("status") != "ok":
                self.fallback_types.append(row["machine_type"])
                continue
            self.strategies[row["machine_type"]] = AudioSpecificStrategy(
                shape,
                self.q_shape,
                projection=projection,
                seed=int(rng.integers(2**31)),
                **row["fitted"],
            )
        self.fallback = fallback or TrainingAudioStrategy(
            shape, self.q_shape, projection=projection, seed=int(rng.integers(2**31))
        )
        if machine_type is not None and machine_type not in {
            *self.strategies,
            *self.fallback_types,
        }:
            known = ", ".join(sorted({*self.strategies, *self.fallback_types}))
            raise ValueError(f"machine_type {machine_type!r} is not in {recommendations} ({known})")

    def for_type(self, machine_type: str):
        """The strategy used for ``machine_type`` (the fallback where no fit was made)."""
        return self.strategies.get(machine_type, self.fallback)

    def __call__(self, batch_size: int, device: Any = "cpu", machine_type: str | None = None):
        chosen = machine_type or self.machine_type
        if chosen is None:
            raise ValueError("give machine_type at construction or in the call")
        return self.for_type(chosen)(batch_size, device)
