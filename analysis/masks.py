"""Stage ``masks``: draw every preset's masks and measure them, at spectrogram size and projected.

The strategies themselves live in :mod:`analysis.strategies` (re-exported here
for callers of earlier versions: ``from analysis.masks import AudioSpecificStrategy``
keeps working). This stage is a thin measurer of whatever strategy a preset
builds: per preset in ``masks.presets``, draw ``n_masks`` masks at spectrogram
size, measure them with :func:`analysis.regions.region_features`, and for
each latent grid and projection measure what the projection does (share of
masks that vanish, retained area, IoU with the original).
"""

from __future__ import annotations

import contextlib
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from analysis.io import atomic_dir, log, read_json, save_npz, write_csv, write_json
from analysis.mel import MelGeometry
from analysis.regions import FEATURE_COLUMNS, region_features
from analysis.strategies import (  # noqa: F401 - re-exported for earlier callers
    PROJECTIONS,
    AudioSpecificStrategy,
    ImportedStrategy,
    PerlinStrategy,
    StrategyError,
    TrainingAudioStrategy,
    project_maps,
)
from analysis.strategies import build_strategy as _build_strategy
from analysis.workers import parallel_map, resolve_n_jobs

# How masks and real regions are projected for the latent-grid scores: what training does.
LATENT_PROJECTION = "any_cell"


def build_strategy(
    preset: dict[str, Any],
    geometry: MelGeometry,
    q_shape: tuple[int, int] | None = None,
    projection: str = "any_cell",
    seed: int | None = None,
    name: str | None = None,
):
    """A strategy from a ``masks.presets`` entry (or a fitted recommendation) for this geometry."""
    return _build_strategy(
        preset, geometry.spectrogram_shape, q_shape, projection, seed=seed, name=name
    )


def full_size_masks(strategy, batch_size: int) -> np.ndarray:
    """(B, n_mels, T) bool masks at spectrogram size from any strategy."""
    return strategy.full_size(batch_size)


def upsample_nearest(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest upsampling of (B, h, w) maps to ``shape`` by index repetition.

    Same cells as ``F.interpolate(mode="nearest")`` (source index ``floor(i * h / H)``),
    without converting to float.
    """
    H, W = shape
    h, w = maps.shape[-2:]
    return maps[:, (np.arange(H) * h) // H][:, :, (np.arange(W) * w) // W]


def nearest_source_starts(size: int, q_size: int) -> tuple[np.ndarray, np.ndarray]:
    """For nearest upsampling of ``q_size`` cells to ``size``: where each cell's run of
    full-size indices starts, and how long it is (source index ``floor(i * q / size)``)."""
    source = (np.arange(size) * q_size) // size
    starts = np.searchsorted(source, np.arange(q_size))
    return starts, np.diff(np.append(starts, size))


def block_sums(x: np.ndarray, starts: np.ndarray, sizes: np.ndarray, axis: int) -> np.ndarray:
    """Sums of ``x`` over consecutive runs along ``axis`` (runs start at ``starts``).

    Equal runs (the grid divides the spectrogram, the usual case) are summed
    through a reshape, in the input's dtype while that cannot overflow: about
    5x faster than ``np.add.reduceat`` along an inner axis.
    """
    if np.all(sizes == sizes[0]) and (x.dtype != np.uint8 or sizes[0] <= 255):
        shape = x.shape[:axis] + (starts.size, int(sizes[0])) + x.shape[axis + 1 :]
        return x.reshape(shape).sum(axis=axis + 1, dtype=x.dtype)
    return np.add.reduceat(x, starts, axis=axis, dtype=np.int32)


def resize_fidelity(
    full: np.ndarray, q_shape: tuple[int, int], method: str
) -> dict[str, np.ndarray]:
    """What resizing to ``q_shape`` keeps of each mask.

    Returns per mask: ``vanished`` (a non-empty mask became empty),
    ``retained_area`` (area of the resized mask brought back to full size by
    nearest upsampling, over the original area) and ``iou`` between the
    original and that upsampled mask.

    Nearest upsampling gives each latent cell a block of full-size cells, so the
    upsampled mask is never drawn: its area is the resized cells' block sizes
    summed, and its overlap with the original is the original's count inside
    the blocks of resized cells (:func:`upsample_nearest` is the slow reference).
    """
    resized = project_maps(full, q_shape, method)
    row_starts, row_sizes = nearest_source_starts(full.shape[-2], resized.shape[-2])
    col_starts, col_sizes = nearest_source_starts(full.shape[-1], resized.shape[-1])
    in_block = block_sums(full.view(np.uint8), row_starts, row_sizes, axis=1)
    in_block = block_sums(in_block.astype(np.int32), col_starts, col_sizes, axis=2)
    area = in_block.sum(axis=(1, 2)).astype(np.float64)
    block_sizes = np.outer(row_sizes, col_sizes)
    back_area = np.where(resized, block_sizes, 0).sum(axis=(1, 2))
    inter = np.where(resized, in_block, 0).sum(axis=(1, 2))
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


def measure_batch(strategy, n_masks: int, n_samples: int, grids: dict, methods: list[str]):
    """Features and resize fidelity of ``n_masks`` masks drawn in one call of ``strategy``.

    Returns
    -------
    features
        ``region_features`` of the masks.
    fidelity
        ``{(grid, method): resize_fidelity(...)}``.
    samples
        The first ``n_samples`` masks: ``full`` and ``GRID__METHOD`` uint8 arrays.
    grid_features
        ``{grid: region_features}`` of the masks projected onto each grid with
        ``LATENT_PROJECTION`` (what training does), for the latent-grid scores.
    """
    full = full_size_masks(strategy, n_masks)
    features = region_features(full)
    grid_features = {
        grid: region_features(project_maps(full, q_shape, LATENT_PROJECTION))
        for grid, q_shape in grids.items()
    }
    samples = {"full": full[:n_samples].astype(np.uint8)}
    fidelity = {}
    for grid, q_shape in grids.items():
        for method in methods:
            fidelity[(grid, method)] = resize_fidelity(full, q_shape, method)
            samples[f"{grid}__{method}"] = project_maps(full[:n_samples], q_shape, method).astype(
                np.uint8
            )
    return features, fidelity, samples, grid_features


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


MASK_BATCH = 250  # masks drawn per task: a preset's batches spread over the cores


def _measure_named_batch(task: tuple) -> tuple:
    """One batch of one preset's :func:`measure_batch`, with errors named by the params key.

    Each batch has its own seed (from the preset's name and the batch's index), so
    a preset's masks are the same whichever worker draws which batch, and a slow
    preset (Perlin) is spread over all cores instead of holding one.
    """
    name, preset, geometry, m, grids, index, size = task
    try:
        seed = preset_seed(m["seed"], f"{name}#{index}")
        strategy = build_strategy(preset, geometry, seed=seed, name=name)
        n_samples = m["n_samples"] if index == 0 else 0
        return measure_batch(strategy, size, n_samples, grids, m["resize_methods"])
    except (StrategyError, TypeError, ValueError) as err:
        message = str(err)
        if not message.startswith("preset "):
            message = f"preset {name!r}: {message}"
        raise StrategyError(f"masks.presets.{name}: {message}") from None


def _join_batches(parts: list[tuple]) -> tuple:
    """One preset's batch results joined in batch order (samples come from the first)."""

    def join(dicts: list[dict]) -> dict:
        return {k: np.concatenate([d[k] for d in dicts]) for k in dicts[0]}

    features = join([p[0] for p in parts])
    fidelity = {key: join([p[1][key] for p in parts]) for key in parts[0][1]}
    grid_features = {grid: join([p[3][grid] for p in parts]) for grid in parts[0][3]}
    return features, fidelity, parts[0][2], grid_features


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
    grid_rows: dict[str, list[dict[str, Any]]] = {}
    fidelity_rows: list[dict[str, Any]] = []
    samples: dict[str, np.ndarray] = {}
    per_mask: dict[str, np.ndarray] = {}
    summary: dict[str, Any] = {}
    batches = [
        (index, min(MASK_BATCH, m["n_masks"] - start))
        for index, start in enumerate(range(0, m["n_masks"], MASK_BATCH))
    ]
    tasks = [
        (name, preset, geometry, m, grids, index, size)
        for name, preset in m["presets"].items()
        for index, size in batches
    ]
    n_jobs = min(resolve_n_jobs(0), len(tasks))
    with atomic_dir(out_dir) as tmp, contextlib.ExitStack() as stack:
        # Batches are independent and seeded by preset name and index: measured on all
        # cores, in any order, the results are the same; map() returns them in order.
        mapper = parallel_map(stack, n_jobs)
        results = iter(mapper(_measure_named_batch, tasks))
        for name, preset in m["presets"].items():
            parts = [next(results) for _ in batches]
            feats, fidelity, preset_samples, grid_feats = _join_batches(parts)
            samples.update({f"{name}__{key}": value for key, value in preset_samples.items()})
            for i in range(m["n_masks"]):
                feature_rows.append(
                    {"preset": name, "mask": i, **{c: feats[c][i] for c in FEATURE_COLUMNS}}
                )
                for grid, gf in grid_feats.items():
                    grid_rows.setdefault(grid, []).append(
                        {"preset": name, "mask": i, **{c: gf[c][i] for c in FEATURE_COLUMNS}}
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
        for grid, rows in grid_rows.items():
            write_csv(tmp / f"features_{grid}.csv", rows, ("preset", "mask", *FEATURE_COLUMNS))
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
