"""Stage ``masks``: draw every preset's masks and measure them, at spectrogram size and projected.

A thin measurer of whatever strategy a preset builds (:mod:`analysis.strategies`):
per preset in ``masks.presets``, draw ``n_masks`` masks at spectrogram size,
measure them with :func:`analysis.regions.region_features`, and for each latent
grid and projection measure what the projection does
(:func:`analysis.fidelity.resize_fidelity`). Writes ``build/masks/`` through
:func:`analysis.artifacts.write_masks`.

``from analysis.masks import AudioSpecificStrategy`` keeps working for callers of
earlier versions (the design's contract); the class lives in
:mod:`analysis.strategies.band`.
"""

from __future__ import annotations

import contextlib
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from analysis.artifacts import MaskMeasurements, sample_key, write_masks
from analysis.fidelity import resize_fidelity
from analysis.io import atomic_dir, log
from analysis.mel import MelGeometry
from analysis.regions import FEATURE_COLUMNS, region_features
from analysis.strategies.band import AudioSpecificStrategy  # noqa: F401 - the design's contract
from analysis.strategies.errors import StrategyError
from analysis.strategies.factory import build_strategy
from analysis.strategies.presets import check_masks_params
from analysis.strategies.projection import LATENT_PROJECTION, project_maps
from analysis.workers import parallel_map, resolve_n_jobs

MASK_BATCH = 250  # masks drawn per task: a preset's batches spread over the cores


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
        The first ``n_samples`` masks: ``full`` and :func:`~analysis.artifacts.sample_key`
        uint8 arrays.
    grid_features
        ``{grid: region_features}`` of the masks projected onto each grid with
        ``LATENT_PROJECTION`` (what training does), for the latent-grid scores.
    """
    full = strategy.full_size(n_masks)
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
            samples[sample_key(grid, method)] = project_maps(
                full[:n_samples], q_shape, method
            ).astype(np.uint8)
    return features, fidelity, samples, grid_features


def _measure_named_batch(task: tuple) -> tuple:
    """One batch of one preset's :func:`measure_batch`, with errors named by the params key.

    Each batch has its own seed (from the preset's name and the batch's index), so
    a preset's masks are the same whichever worker draws which batch, and a slow
    preset (Perlin) is spread over all cores instead of holding one.
    """
    name, preset, geometry, m, grids, index, size = task
    try:
        seed = preset_seed(m["seed"], f"{name}#{index}")
        strategy = build_strategy(preset, geometry.spectrogram_shape, seed=seed, name=name)
        n_samples = m["n_samples"] if index == 0 else 0
        return measure_batch(strategy, size, n_samples, grids, m["resize_methods"])
    except StrategyError as err:
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


def fidelity_row(preset: str, grid: str, q_shape, method: str, fid: dict) -> dict[str, Any]:
    """One ``fidelity.csv`` row: a preset's masks projected onto one grid with one method."""
    return {
        "preset": preset,
        "grid": grid,
        "q_shape": f"{q_shape[0]}x{q_shape[1]}",
        "method": method,
        "vanished_share": float(np.mean(fid["vanished"])),
        "retained_area_mean": float(np.nanmean(fid["retained_area"])),
        "iou_mean": float(np.nanmean(fid["iou"])),
        "iou_p10": float(np.nanpercentile(fid["iou"], 10)),
    }


def add_preset(out: MaskMeasurements, name: str, preset: dict, joined: tuple, grids: dict) -> None:
    """Record one preset's joined batches in the measurements."""
    feats, fidelity, samples, grid_feats = joined
    out.samples[name] = samples
    for i in range(feats[FEATURE_COLUMNS[0]].size):
        out.feature_rows.append(
            {"preset": name, "mask": i, **{c: feats[c][i] for c in FEATURE_COLUMNS}}
        )
        for grid, gf in grid_feats.items():
            out.grid_rows.setdefault(grid, []).append(
                {"preset": name, "mask": i, **{c: gf[c][i] for c in FEATURE_COLUMNS}}
            )
    summary = {
        "kind": preset["kind"],
        "empty_share": float(np.mean(np.isnan(feats["area_fraction"]))),
        "features_median": {c: float(np.nanmedian(feats[c])) for c in FEATURE_COLUMNS},
        "grids": {},
    }
    for (grid, method), fid in fidelity.items():
        for metric, values in fid.items():
            out.per_mask[(name, grid, method, metric)] = values
        row = fidelity_row(name, grid, grids[grid], method, fid)
        out.fidelity_rows.append(row)
        summary["grids"].setdefault(grid, {})[method] = row
    out.summary[name] = summary


def masks_stage(params: dict[str, Any], out_dir: str | Path = "build/masks") -> Path:
    """Draw every preset's masks, measure them and their resizing; write ``build/masks/``.

    Parameters
    ----------
    params
        Validated params; reads ``masks.*``, ``features.n_mels`` and ``features.target_T``.
    """
    check_masks_params(params)  # the presets' settings, before any mask is drawn
    m = params["masks"]
    geometry = MelGeometry.from_params(params)
    grids = {name: geometry.q_shape(f) for name, f in m["q_grids"].items()}
    out = MaskMeasurements(
        meta={
            "presets": m["presets"],
            "preset_order": list(m["presets"]),
            "grids": {g: list(s) for g, s in grids.items()},
            "resize_methods": m["resize_methods"],
            "spectrogram_shape": list(geometry.spectrogram_shape),
        },
        feature_rows=[],
        grid_rows={},
        fidelity_rows=[],
        samples={},
        per_mask={},
        summary={},
    )
    batches = [
        (index, min(MASK_BATCH, m["n_masks"] - start))
        for index, start in enumerate(range(0, m["n_masks"], MASK_BATCH))
    ]
    tasks = [
        (name, preset, geometry, m, grids, index, size)
        for name, preset in m["presets"].items()
        for index, size in batches
    ]
    with atomic_dir(out_dir) as tmp, contextlib.ExitStack() as stack:
        # Batches are independent and seeded by preset name and index: measured on all
        # cores, in any order, the results are the same; map() returns them in order.
        mapper = parallel_map(stack, min(resolve_n_jobs(m["n_jobs"]), len(tasks)))
        results = iter(mapper(_measure_named_batch, tasks))
        for name, preset in m["presets"].items():
            add_preset(out, name, preset, _join_batches([next(results) for _ in batches]), grids)
            log(f"masks: {name}: {m['n_masks']} masks")
        write_masks(tmp, out)
    return Path(out_dir)
