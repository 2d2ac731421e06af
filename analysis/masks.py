"""Synthetic anomaly masks: ``AudioSpecificStrategy``, the DSR Perlin baseline, resizing.

``AudioSpecificStrategy`` draws one mel band and several time segments per
mask. A band-times-segments mask is the outer product of a mel-row vector and
a frame vector, so the strategy draws those two vectors for the whole batch
with torch, resizes each to the quantized grid, and only then forms the
output: nothing is drawn at full size and there is no Python loop per mask or
per segment. Placement is uniform over every valid position, so every mel bin
and every frame can be masked (the seed notebook's numpy sketch used an
exclusive upper bound and could reach neither the top band position nor the
last frame).

Stage ``masks``: per preset in ``masks.presets``, draw ``n_masks`` masks at
spectrogram size, measure them with :func:`analysis.regions.region_features`,
and for each quantized grid and resize method measure what resizing does
(share of masks that vanish, retained area, IoU with the original).
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from analysis.io import atomic_dir, log, read_json, save_npz, write_csv, write_json
from analysis.mel import MelGeometry
from analysis.regions import FEATURE_COLUMNS, region_features

RESIZE_METHODS = ("nearest", "max_pool")


def resize_mask(
    mask: torch.Tensor, q_shape: tuple[int, int], method: str = "nearest"
) -> torch.Tensor:
    """Resize (B, 1, H, W) 0/1 maps to ``q_shape``.

    ``nearest`` is what training does (``F.interpolate``; samples every k-th
    row/column, so bands narrower than the stride and short segments can
    vanish). ``max_pool`` marks a grid cell when any input cell under it is
    masked (``F.adaptive_max_pool2d``), so it never loses a masked cell.
    """
    if tuple(mask.shape[-2:]) == tuple(q_shape):
        return mask
    if method == "nearest":
        return F.interpolate(mask, size=q_shape, mode="nearest")
    if method == "max_pool":
        return F.adaptive_max_pool2d(mask, q_shape)
    raise ValueError(f"resize method {method!r} is not one of {', '.join(RESIZE_METHODS)}")


def _make_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator | None:
    if generator is not None and seed is not None:
        raise ValueError("give either seed or generator, not both")
    if seed is not None:
        return torch.Generator().manual_seed(int(seed))
    return generator


def _uniform_int(low: torch.Tensor, high: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Integers uniform in [low, high] inclusive, from uniforms ``u`` in [0, 1)."""
    span = high - low + 1
    return low + torch.minimum((u * span).long(), high - low)


class AudioSpecificStrategy:
    """One mel band x several time segments, resized to a quantized grid.

    Parameters
    ----------
    spectrogram_shape
        (n_mels, T) of the spectrogram the mask describes.
    q_shape
        (H_q, W_q) of the output; equal to ``spectrogram_shape`` means no resize.
    n_mels, T
        Must match ``spectrogram_shape`` (kept for callers of the original class).
    min_band_fraction, max_band_fraction
        Band height as a fraction of n_mels, in (0, 1]; the width is
        ``max(1, int(n_mels * u))`` for u uniform in the range.
    min_segments, max_segments
        Segments per mask, uniform inclusive. Overlapping segments merge.
    min_seg_len, max_seg_len
        Segment length in frames, uniform inclusive, within 1..T. The default
        maximum is ``T // 4`` (the original behaviour).
    min_band_position, max_band_position
        The band lies inside this range of the mel axis (fractions, default the
        whole axis).
    resize
        ``nearest`` (training today) or ``max_pool`` (never loses a cell).
    seed, generator
        For reproducible draws: an int seed or a ``torch.Generator``.
    """

    def __init__(
        self,
        spectrogram_shape: tuple[int, int] = (128, 320),
        q_shape: tuple[int, int] = (32, 80),
        n_mels: int | None = None,
        T: int | None = None,
        min_band_fraction: float = 0.05,
        max_band_fraction: float = 0.15,
        min_segments: int = 10,
        max_segments: int = 160,
        min_seg_len: int = 1,
        max_seg_len: int | None = None,
        min_band_position: float = 0.0,
        max_band_position: float = 1.0,
        resize: str = "nearest",
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        H, W = (int(x) for x in spectrogram_shape)
        n_mels = H if n_mels is None else int(n_mels)
        T = W if T is None else int(T)
        if (n_mels, T) != (H, W):
            raise ValueError(
                f"n_mels x T = {n_mels} x {T} does not match spectrogram_shape {spectrogram_shape}"
            )
        max_seg_len = max(1, T // 4) if max_seg_len is None else int(max_seg_len)
        _check_range("band_fraction", min_band_fraction, max_band_fraction, 0.0, 1.0, open_low=True)
        _check_range("segments", min_segments, max_segments, 1, math.inf)
        _check_range("seg_len", min_seg_len, max_seg_len, 1, T)
        _check_range("band_position", min_band_position, max_band_position, 0.0, 1.0)
        if min_band_position == max_band_position:
            raise ValueError("min_band_position must be below max_band_position")
        if resize not in RESIZE_METHODS:
            raise ValueError(f"resize {resize!r} is not one of {', '.join(RESIZE_METHODS)}")
        self.spectrogram_shape = (H, W)
        self.q_shape = tuple(int(x) for x in q_shape)
        self.n_mels, self.T = n_mels, T
        self.min_band_fraction, self.max_band_fraction = (
            float(min_band_fraction),
            float(max_band_fraction),
        )
        self.min_segments, self.max_segments = int(min_segments), int(max_segments)
        self.min_seg_len, self.max_seg_len = int(min_seg_len), max_seg_len
        # Rows the band may occupy: [pos_lo, pos_hi) with at least one row.
        self.pos_lo = min(int(math.floor(min_band_position * n_mels)), n_mels - 1)
        self.pos_hi = max(int(math.ceil(max_band_position * n_mels)), self.pos_lo + 1)
        self.resize = resize
        self.generator = _make_generator(seed, generator)

    def draw_factors(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mel-row and frame vectors of ``batch_size`` masks at spectrogram size.

        Returns
        -------
        rows, frames
            Bool tensors (B, n_mels) and (B, T); the mask is their outer product.
        """
        g, B, H, T, S = self.generator, int(batch_size), self.n_mels, self.T, self.max_segments
        room = self.pos_hi - self.pos_lo
        u = torch.rand(3, B, generator=g, dtype=torch.float64)
        frac = self.min_band_fraction + (self.max_band_fraction - self.min_band_fraction) * u[0]
        width = torch.clamp((H * frac).long(), min=1, max=room)
        low = self.pos_lo + _uniform_int(torch.zeros(B, dtype=torch.long), room - width, u[1])
        bins = torch.arange(H)
        rows = (bins >= low[:, None]) & (bins < (low + width)[:, None])

        n_seg = _uniform_int(torch.tensor(self.min_segments), torch.tensor(S), u[2])
        v = torch.rand(2, B, S, generator=g)
        length = _uniform_int(torch.tensor(self.min_seg_len), torch.tensor(self.max_seg_len), v[0])
        start = _uniform_int(torch.zeros((), dtype=torch.long), T - length, v[1])
        active = (torch.arange(S)[None, :] < n_seg[:, None]).long()
        # Coverage by a difference array: +1 at each start, -1 after each end.
        edges = torch.zeros(B, T + 1, dtype=torch.long)
        edges.scatter_add_(1, start, active)
        edges.scatter_add_(1, start + length, -active)
        frames = edges.cumsum(1)[:, :T] > 0
        return rows, frames

    def __call__(self, batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Masks of shape (B, 1, H_q, W_q), float 0/1, on ``device``."""
        rows, frames = self.draw_factors(batch_size)
        # Resizing an outer product equals the outer product of the resized factors
        # (for nearest and for max-pool), so only the two vectors are resized.
        q_h, q_w = self.q_shape
        rows_q = resize_vector(rows, q_h, self.resize)
        frames_q = resize_vector(frames, q_w, self.resize)
        # A float multiply broadcasts about 10x faster than a bool AND plus a cast.
        rows_f, frames_f = rows_q.to(torch.float32), frames_q.to(torch.float32)
        return (rows_f[:, None, :, None] * frames_f[:, None, None, :]).to(device)


def resize_vector(vectors: torch.Tensor, size: int, method: str) -> torch.Tensor:
    """Resize (B, L) bool vectors to (B, size), cell for cell as :func:`resize_mask` does.

    ``nearest`` keeps source index ``floor(i * L / size)`` (what ``F.interpolate``
    picks); ``max_pool`` marks an output cell when any input cell of its
    adaptive-pooling window is set. Working on vectors avoids the per-call cost
    of the 2-D kernels on tiny inputs.
    """
    length = vectors.shape[1]
    if size == length:
        return vectors
    if method == "nearest":
        return vectors[:, (torch.arange(size) * length) // size]
    if length % size == 0:
        return vectors.view(vectors.shape[0], size, length // size).any(dim=2)
    return resize_mask(vectors.float()[:, None, :, None], (size, 1), "max_pool")[:, 0, :, 0].bool()


def _check_range(name: str, lo, hi, floor, ceiling, open_low: bool = False) -> None:
    below = lo <= floor if open_low else lo < floor
    if below or hi > ceiling:
        low_text = f"({floor}" if open_low else f"[{floor}"
        raise ValueError(f"min_{name}/max_{name} = {lo}/{hi} must lie in {low_text}, {ceiling}]")
    if lo > hi:
        raise ValueError(f"min_{name} = {lo} is above max_{name} = {hi}")


def perlin_noise(
    shape: tuple[int, int], res: tuple[int, int], batch: int, generator
) -> torch.Tensor:
    """(batch, H, W) gradient (Perlin) noise on a ``res`` lattice, about in [-1, 1]."""
    H, W = shape
    ry, rx = res
    grads = 2 * math.pi * torch.rand(batch, ry + 1, rx + 1, generator=generator)
    gy, gx = torch.sin(grads), torch.cos(grads)
    py = torch.arange(H, dtype=torch.float32) * ry / H
    px = torch.arange(W, dtype=torch.float32) * rx / W
    iy, ix = py.floor().long(), px.floor().long()
    fy, fx = (py - iy)[:, None], (px - ix)[None, :]

    def corner(dy: int, dx: int) -> torch.Tensor:
        cy, cx = (iy + dy)[:, None], (ix + dx)[None, :]
        return gy[:, cy, cx] * (fy - dy) + gx[:, cy, cx] * (fx - dx)

    def fade(t: torch.Tensor) -> torch.Tensor:
        return 6 * t**5 - 15 * t**4 + 10 * t**3

    uy, ux = fade(fy), fade(fx)
    top = torch.lerp(corner(0, 0), corner(0, 1), ux)
    bottom = torch.lerp(corner(1, 0), corner(1, 1), ux)
    return math.sqrt(2) * torch.lerp(top, bottom, uy)


class PerlinStrategy:
    """The DSR/DRAEM baseline: thresholded 2-D Perlin noise, optionally rotated.

    The lattice has ``2**k`` cells per axis, k drawn independently per axis in
    ``[min_scale_exp, max_scale_exp)`` as in DRAEM (``max`` itself only when
    both are equal); cells above ``threshold`` are masked. Same call contract
    as :class:`AudioSpecificStrategy`.
    """

    def __init__(
        self,
        spectrogram_shape: tuple[int, int] = (128, 320),
        q_shape: tuple[int, int] = (32, 80),
        min_scale_exp: int = 0,
        max_scale_exp: int = 6,
        threshold: float = 0.5,
        rotate: bool = True,
        resize: str = "nearest",
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if not 0 <= min_scale_exp <= max_scale_exp:
            raise ValueError(
                f"need 0 <= min_scale_exp <= max_scale_exp, got {min_scale_exp}, {max_scale_exp}"
            )
        if resize not in RESIZE_METHODS:
            raise ValueError(f"resize {resize!r} is not one of {', '.join(RESIZE_METHODS)}")
        self.spectrogram_shape = tuple(int(x) for x in spectrogram_shape)
        self.q_shape = tuple(int(x) for x in q_shape)
        self.min_scale_exp, self.max_scale_exp = int(min_scale_exp), int(max_scale_exp)
        self.threshold, self.rotate, self.resize = float(threshold), bool(rotate), resize
        self.generator = _make_generator(seed, generator)

    def full_size(self, batch_size: int) -> torch.Tensor:
        """(B, n_mels, T) bool masks at spectrogram size."""
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
            cos, sin = torch.cos(angles), torch.sin(angles)
            zero = torch.zeros_like(cos)
            theta = torch.stack(
                [torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1
            )
            grid = F.affine_grid(theta, (batch_size, 1, H, W), align_corners=False)
            noise = F.grid_sample(noise[:, None], grid, mode="bilinear", align_corners=False)[:, 0]
        return noise > self.threshold

    def __call__(self, batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        masks = self.full_size(batch_size).float()[:, None]
        return resize_mask(masks, self.q_shape, self.resize).to(device)


def build_strategy(
    preset: dict[str, Any],
    geometry: MelGeometry,
    q_shape: tuple[int, int] | None = None,
    resize: str = "nearest",
    seed: int | None = None,
) -> AudioSpecificStrategy | PerlinStrategy:
    """A strategy from a ``masks.presets`` entry (or a fitted recommendation)."""
    shape = geometry.spectrogram_shape
    q_shape = q_shape or shape
    settings = {k: v for k, v in preset.items() if k != "kind"}
    if preset.get("kind", "audio_specific") == "perlin":
        return PerlinStrategy(shape, q_shape, resize=resize, seed=seed, **settings)
    return AudioSpecificStrategy(shape, q_shape, *shape, resize=resize, seed=seed, **settings)


def full_size_masks(strategy, batch_size: int) -> np.ndarray:
    """(B, n_mels, T) bool masks at spectrogram size from either strategy."""
    if isinstance(strategy, PerlinStrategy):
        return strategy.full_size(batch_size).numpy()
    rows, frames = strategy.draw_factors(batch_size)
    return (rows[:, :, None] & frames[:, None, :]).numpy()


def upsample_nearest(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest upsampling of (B, h, w) maps to ``shape`` by index repetition.

    Same cells as ``F.interpolate(mode="nearest")`` (source index ``floor(i * h / H)``),
    without converting to float.
    """
    H, W = shape
    h, w = maps.shape[-2:]
    return maps[:, (np.arange(H) * h) // H][:, :, (np.arange(W) * w) // W]


def resize_fidelity(
    full: np.ndarray, q_shape: tuple[int, int], method: str
) -> dict[str, np.ndarray]:
    """What resizing to ``q_shape`` keeps of each mask.

    Returns per mask: ``vanished`` (a non-empty mask became empty),
    ``retained_area`` (area of the resized mask brought back to full size by
    nearest upsampling, over the original area) and ``iou`` between the
    original and that upsampled mask.
    """
    original = torch.from_numpy(full).float()[:, None]
    resized = resize_mask(original, q_shape, method)[:, 0].bool().numpy()
    back = upsample_nearest(resized, full.shape[-2:])
    area = np.count_nonzero(full, axis=(1, 2)).astype(np.float64)
    back_area = np.count_nonzero(back, axis=(1, 2))
    inter = np.count_nonzero(full & back, axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "vanished": (back_area == 0) & (area > 0),
            "retained_area": back_area / area,
            "iou": inter / (area + back_area - inter),
        }


def read_masks_meta(masks_dir: str | Path) -> dict[str, Any]:
    """``build/masks/presets.json`` with ``presets`` in the user's order (JSON keys are sorted)."""
    meta = read_json(Path(masks_dir) / "presets.json")
    meta["presets"] = {name: meta["presets"][name] for name in meta["preset_order"]}
    return meta


def preset_seed(base_seed: int, name: str) -> int:
    """A stable per-preset seed (crc32 of the name, not Python's salted hash)."""
    return (base_seed * 1_000_003 + zlib.crc32(name.encode())) % (2**31)


def measure_preset(
    strategy, n_masks: int, n_samples: int, grids: dict, methods: list[str], batch: int = 250
):
    """Features and resize fidelity of ``n_masks`` masks, drawn and measured in batches.

    Returns
    -------
    features
        ``region_features`` of all masks.
    fidelity
        ``{(grid, method): resize_fidelity(...)}`` over all masks.
    samples
        The first ``n_samples`` masks: ``full`` and ``GRID__METHOD`` uint8 arrays.
    """
    feature_parts, fidelity_parts, samples = [], {}, {}
    for start in range(0, n_masks, batch):
        full = full_size_masks(strategy, min(batch, n_masks - start))
        feature_parts.append(region_features(full))
        if start == 0:
            samples["full"] = full[:n_samples].astype(np.uint8)
        for grid, q_shape in grids.items():
            for method in methods:
                fidelity_parts.setdefault((grid, method), []).append(
                    resize_fidelity(full, q_shape, method)
                )
                if start == 0:
                    small = torch.from_numpy(full[:n_samples]).float()[:, None]
                    samples[f"{grid}__{method}"] = (
                        resize_mask(small, q_shape, method)[:, 0].numpy().astype(np.uint8)
                    )
    features = {c: np.concatenate([p[c] for p in feature_parts]) for c in FEATURE_COLUMNS}
    fidelity = {
        key: {metric: np.concatenate([p[metric] for p in parts]) for metric in parts[0]}
        for key, parts in fidelity_parts.items()
    }
    return features, fidelity, samples


FIDELITY_COLUMNS = (
    "preset",
    "grid",
    "q_shape",
    "method",
    "vanished_share",
    "retained_area_mean",
    "iou_mean",
    "iou_p10",
)


def masks_stage(params: dict[str, Any], out_dir: str | Path = "build/masks") -> Path:
    """Draw every preset's masks, measure them and their resizing; write ``build/masks/``.

    Parameters
    ----------
    params
        Validated params; reads ``masks.*``, ``features.n_mels`` and ``features.target_T``.
    """
    m = params["masks"]
    geometry = MelGeometry.from_params(params)
    grids = {name: geometry.q_shape(f) for name, f in m["q_grids"].items()}
    feature_rows: list[dict[str, Any]] = []
    fidelity_rows: list[dict[str, Any]] = []
    samples: dict[str, np.ndarray] = {}
    per_mask: dict[str, np.ndarray] = {}
    summary: dict[str, Any] = {}
    with atomic_dir(out_dir) as tmp:
        for name, preset in m["presets"].items():
            strategy = build_strategy(preset, geometry, seed=preset_seed(m["seed"], name))
            feats, fidelity, preset_samples = measure_preset(
                strategy, m["n_masks"], m["n_samples"], grids, m["resize_methods"]
            )
            samples.update({f"{name}__{key}": value for key, value in preset_samples.items()})
            for i in range(m["n_masks"]):
                feature_rows.append(
                    {"preset": name, "mask": i, **{c: feats[c][i] for c in FEATURE_COLUMNS}}
                )
            summary[name] = {
                "kind": preset["kind"],
                "empty_share": float(np.mean(np.isnan(feats["area_fraction"]))),
                "features_median": {c: float(np.nanmedian(feats[c])) for c in FEATURE_COLUMNS},
                "grids": {},
            }
            for (grid, method), fid in fidelity.items():
                q_shape = grids[grid]
                for metric, values in fid.items():
                    per_mask[f"{name}__{grid}__{method}__{metric}"] = values
                row = {
                    "preset": name,
                    "grid": grid,
                    "q_shape": f"{q_shape[0]}x{q_shape[1]}",
                    "method": method,
                    "vanished_share": float(np.mean(fid["vanished"])),
                    "retained_area_mean": float(np.nanmean(fid["retained_area"])),
                    "iou_mean": float(np.nanmean(fid["iou"])),
                    "iou_p10": float(np.nanpercentile(fid["iou"], 10)),
                }
                fidelity_rows.append(row)
                summary[name]["grids"].setdefault(grid, {})[method] = row
            log(f"masks: {name}: {m['n_masks']} masks")
        write_csv(tmp / "features.csv", feature_rows, ("preset", "mask", *FEATURE_COLUMNS))
        write_csv(tmp / "fidelity.csv", fidelity_rows, FIDELITY_COLUMNS)
        save_npz(tmp / "samples.npz", **samples)
        save_npz(tmp / "fidelity_per_mask.npz", **per_mask)
        write_json(
            tmp / "presets.json",
            {
                "presets": m["presets"],
                "preset_order": list(m["presets"]),
                "grids": {g: list(s) for g, s in grids.items()},
                "resize_methods": m["resize_methods"],
                "spectrogram_shape": list(geometry.spectrogram_shape),
            },
        )
        write_json(tmp / "summary.json", summary)
    return Path(out_dir)
