"""Stage ``localize@TYPE``: where the test-clip anomalies of one machine type sit.

Reads ``build/features/TYPE/``, runs the methods of :mod:`analysis.localization`
per machine ID, and writes ``build/localization/TYPE.{npz,json,regions.csv}``:

* pass 1 calibrates the clip-level threshold on the type's normal clips, out of
  fold and pooled over its IDs (:func:`~analysis.localization.clip_level.pool_calibration`);
* pass 2, per ID (in a process pool): the seed's maps, a clip-level region per
  anomalous clip with its features and IoU with any ground truth, and the ID-level
  pooled evidence (:func:`~analysis.localization.id_level.id_level_evidence`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from analysis.artifacts import (
    LocalizationArrays,
    pooled_part,
    read_ground_truth,
    read_test_features,
    write_localization,
)
from analysis.dcase import unit_domain, unit_key, unit_label, unit_section
from analysis.io import log, map_npz_member
from analysis.localization.clip_level import (
    detect_regions,
    out_of_fold_levels,
    pool_calibration,
)
from analysis.localization.id_level import id_level_evidence_on_maps, scale_maps, time_scales
from analysis.localization.maps import iou, localization_maps, pad_frames, truth_map
from analysis.localization.patterns import classify_pattern
from analysis.mel import MelGeometry
from analysis.regions import FEATURE_COLUMNS, region_features
from analysis.workers import parallel_map, resolve_n_jobs, return_freed_memory


@dataclass(frozen=True)
class ClipRows:
    """Some clips of a type's ``test.npz`` by row, cut to their first ``frames`` frames.

    Tasks carry these, not the clips: whoever computes on them reads them from the
    memory-mapped features (:meth:`load`), so the stage's own process never holds a unit's
    clips and no clip is pickled to a worker. At the development set's size ToyConveyor's
    3,509 test clips are 575 MB of float32, and a worker's float64 copies twice that.
    """

    path: Path  # test.npz
    rows: np.ndarray  # int64 row indices, in file order
    frames: int  # real frames every clip of the unit has

    @property
    def n(self) -> int:
        return int(self.rows.size)

    def load(self) -> np.ndarray:
        """(n, n_mels, frames) float64, as the methods compute."""
        logmel = map_npz_member(self.path, "logmel")
        if logmel is None:  # a compressed member cannot be mapped
            logmel = read_test_features(self.path.parent).logmel
        clips = np.asarray(logmel[self.rows, :, : self.frames])  # float32, only these rows
        del logmel  # unmaps the file
        return clips.astype(np.float64)


def load_clips(clips: ClipRows | np.ndarray) -> np.ndarray:
    """float64 clips from a :class:`ClipRows` or an array."""
    return clips.load() if isinstance(clips, ClipRows) else np.asarray(clips, dtype=np.float64)


def unit_out_of_fold_levels(clips: ClipRows, loc: dict[str, Any]) -> tuple:
    """:func:`~analysis.localization.clip_level.out_of_fold_levels` of a unit's normal clips,
    read here (in a pool worker); the freed heap is handed back before the next task."""
    measured = out_of_fold_levels(clips.load(), loc)
    return_freed_memory()
    return measured


@dataclass(frozen=True)
class IdTask:
    """What pass 2 of :func:`localize` needs for one machine ID (sent to a pool worker)."""

    machine_type: str
    machine_id: str
    normal: ClipRows  # normal test clips of the ID (with a borrowed reference's first)
    anomaly: ClipRows  # anomalous test clips, the same frames
    files: list[str]  # the anomalous clips' files
    threshold: float | None  # calibrated clip-level threshold (|z|)
    cell_level: float | None  # a detected clip's region level
    band_levels: np.ndarray | None  # per band height: the level a band grows along time at
    loc: dict[str, Any]  # localization params
    geometry: MelGeometry
    truth_by_file: dict[str, list[dict[str, str]]]  # ground-truth rows of these files


def clip_rows(
    task: IdTask, regions: np.ndarray, levels: np.ndarray
) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
    """One ``regions.csv`` row per anomalous clip of an ID, with IoU against any ground truth.

    Returns the rows, which clips have a region, and the union of the ID's ground truth.
    """
    geometry = task.geometry
    feats = region_features(regions)
    found = ~np.isnan(feats["area_fraction"])
    truth_union = np.zeros(geometry.spectrogram_shape, dtype=bool)
    real_frames = task.normal.frames  # the truth is judged where the clips have sound
    rows = []
    for i, file in enumerate(task.files):
        row = {"file": file, "machine_id": task.machine_id, "found": int(found[i])}
        row.update({c: feats[c][i] for c in FEATURE_COLUMNS})
        row["critical_level"] = float(levels[i])
        row["band_centre_hz"] = (
            float(geometry.bin_to_hz(feats["band_centre_bin"][i])) if found[i] else None
        )
        if found[i]:  # the band's lowest and highest mel bin, for the report's words (not CSV)
            band_bins = np.flatnonzero(regions[i].any(axis=1))
            row["band_edges_hz"] = [
                float(geometry.bin_to_hz(band_bins[0])),
                float(geometry.bin_to_hz(band_bins[-1])),
            ]
        if file in task.truth_by_file:
            truth = truth_map(task.truth_by_file[file], geometry)
            truth[:, real_frames:] = False
            truth_union |= truth
            row["truth_kind"] = task.truth_by_file[file][0]["kind"]
            row["iou"] = iou(regions[i], truth) if found[i] else 0.0
            if found[i]:
                truth_centre = region_features(truth)["band_centre_bin"][0]
                row["centre_error_bins"] = abs(feats["band_centre_bin"][i] - truth_centre)
        rows.append(row)
    return rows, found, truth_union


def id_summary(
    maps: dict[str, np.ndarray],
    rows: list[dict[str, Any]],
    found: np.ndarray,
    id_level: dict[str, Any],
    geometry: MelGeometry,
) -> dict[str, Any]:
    """The ``ids`` entry of ``TYPE.json`` for one localized machine ID."""
    dev, excess = maps["dev"], maps["excess"]
    dev_peak = np.unravel_index(np.argmax(dev), dev.shape)
    excess_peak = np.unravel_index(np.argmax(excess), excess.shape)
    found_feats = {c: np.array([r[c] for r in rows if r["found"]]) for c in FEATURE_COLUMNS}
    ious = [r["iou"] for r in rows if "iou" in r]
    centre_errors = [r["centre_error_bins"] for r in rows if "centre_error_bins" in r]
    pooled = id_level["all"]["features"] if id_level["all"]["found"] else None
    return {
        "status": "ok",
        "dev_peak_mel": int(dev_peak[0]),
        "dev_peak_frame": int(dev_peak[1]),
        "dev_peak_hz": float(geometry.bin_to_hz(dev_peak[0])),
        "excess_peak_mel": int(excess_peak[0]),
        "excess_peak_frame": int(excess_peak[1]),
        "excess_peak_hz": float(geometry.bin_to_hz(excess_peak[0])),
        "excess_max": float(excess.max()),
        "diff_min": float(maps["diff"].min()),
        "diff_max": float(maps["diff"].max()),
        "n_regions_found": int(found.sum()),
        "no_region_share": float(1 - found.mean()),
        "pattern": classify_pattern(found_feats, geometry.target_T),
        "id_level": id_level,
        "id_level_pattern": classify_pattern(
            {k: np.array([np.nan if v is None else v]) for k, v in pooled.items()},
            geometry.target_T,
        )
        if pooled is not None
        else "none found",
        "mean_iou": float(np.mean(ious)) if ious else None,
        "median_centre_error_bins": float(np.median(centre_errors)) if centre_errors else None,
        # For the report's words: the found regions' median features and where their bands sit.
        "clip_features_median": (
            {c: float(np.median(v)) for c, v in found_feats.items()} if found.any() else None
        ),
        "clip_band_hz": band_edges_hz([r["band_edges_hz"] for r in rows if r["found"]]),
        "pooled_band_hz": (
            [
                float(geometry.bin_to_hz(min(id_level["all"]["rows"]))),
                float(geometry.bin_to_hz(max(id_level["all"]["rows"]))),
            ]
            if pooled is not None
            else None
        ),
    }


def band_edges_hz(edges_hz: list[list[float]]) -> list[float] | None:
    """Where the found regions' bands lie: the median lower edge to the median upper edge
    (Hz, centres of the lowest and highest mel bin of each band), or None."""
    if not edges_hz:
        return None
    edges = np.asarray(edges_hz, dtype=np.float64)
    return [float(np.median(edges[:, 0])), float(np.median(edges[:, 1]))]


def localize_id(task: IdTask) -> dict[str, Any]:
    """Pass 2 of :func:`localize` for one machine ID.

    Returns
    -------
    dict
        ``{"status": ...}`` when there is nothing to localize; else ``maps`` and
        ``pooled`` (for the npz), region ``rows``, ``regions`` (in ``task.files``
        order) and ``summary``.
    """
    if task.anomaly.n == 0:
        return {"status": "not enough evidence: no anomalous test clips"}
    normal, anomaly = task.normal.load(), task.anomaly.load()
    T = task.geometry.target_T
    maps = localization_maps(normal, anomaly)
    regions, levels = detect_regions(
        normal, anomaly, task.threshold, task.loc, task.cell_level, band_levels=task.band_levels
    )
    regions = pad_frames(regions, T, False)
    rows, found, truth_union = clip_rows(task, regions, levels)
    scales = time_scales(task.loc, normal.shape[2])
    x = {L: scale_maps(normal, task.loc["smooth_bins"], L) for L in scales}
    y = {L: scale_maps(anomaly, task.loc["smooth_bins"], L) for L in scales}
    shape = normal.shape[1:]
    del normal, anomaly  # the tests need only their maps
    id_level, pooled = id_level_evidence_on_maps(
        x,
        y,
        shape,
        task.loc,
        f"{task.machine_type}/{task.machine_id}",
        truth_union if truth_union.any() else None,
        frames_total=T,
    )
    del x, y
    return_freed_memory()
    # Padded frames are no data: NaN in the stored maps (the frequency profile has no frames).
    stored = {
        k: v if k == "excess_freq_profile" else pad_frames(v, T, np.nan) for k, v in maps.items()
    }
    return {
        "maps": {k: v.astype(np.float32) for k, v in stored.items()},
        "pooled": pooled,
        "rows": rows,
        "regions": regions,
        "summary": id_summary(maps, rows, found, id_level, task.geometry),
    }


def add_clip_fields(rows: list[dict[str, Any]], test) -> None:
    """Each region row's section, domain and attributes ("" in DCASE 2020), by its file."""
    fields = ("section", "domain", "attributes")
    columns = [test.text_field(n).tolist() for n in fields]
    by_file = {
        f: dict(zip(fields, values, strict=True))
        for f, *values in zip(test.file.tolist(), *columns, strict=True)
    }
    for row in rows:
        row.update(by_file.get(row["file"], {}))


def split_by_id(
    test, loc: dict[str, Any], machine_type: str, path: Path
) -> tuple[dict[str, tuple[ClipRows, ClipRows, list[str]]], dict[str, dict[str, Any]]]:
    """Each ID's normal clips, anomalous clips (as :class:`ClipRows` of ``path``, the type's
    ``test.npz``) and anomalous files, and per-ID counts; an ID with too few normal clips
    gets a status instead of clips.

    The clips keep only the frames every clip of the ID really has (the padding to
    ``target_T`` is constant and would enter every variance and test as zero-variance
    cells).
    """
    by_id, per_id = {}, {}
    for machine_id in test.machine_ids():
        ids = test.machine_id == machine_id
        real = int(test.n_frames[ids].min())
        normal = ClipRows(path, np.flatnonzero(test.pick(machine_id, 0)), real)
        anomaly = ClipRows(path, np.flatnonzero(test.pick(machine_id, 1)), real)
        files = test.file[test.pick(machine_id, 1)].tolist()
        per_id[machine_id] = {
            "n_normal": normal.n,
            "n_anomaly": anomaly.n,
            "n_real_frames": real,
        }
        by_id[machine_id] = (normal, anomaly, files)
    return borrow_reference_normals(by_id, per_id, loc, machine_type), per_id


def borrow_reference_normals(
    by_id: dict, per_id: dict[str, dict[str, Any]], loc: dict[str, Any], machine_type: str
) -> dict:
    """Units with too few normal clips for a reference of their own.

    A target-domain unit whose section's source unit has enough takes the source normal
    clips beside its own as its reference (``per_id[unit]["reference"]`` says so, for the
    report); any other such unit gets a "not enough evidence" status and is left out.
    """
    kept = {}
    need = loc["min_normal_clips"]
    for key, (normal, anomaly, files) in by_id.items():
        if normal.n >= need:
            kept[key] = (normal, anomaly, files)
            continue
        source = unit_key(unit_section(key), "source") if unit_domain(key) == "target" else ""
        if source in by_id and by_id[source][0].n >= need:
            reference = by_id[source][0]
            frames = min(reference.frames, normal.frames)
            kept[key] = (
                ClipRows(normal.path, np.concatenate([reference.rows, normal.rows]), frames),
                ClipRows(anomaly.path, anomaly.rows, frames),
                files,
            )
            per_id[key]["n_real_frames"] = frames
            per_id[key]["reference"] = {
                "unit": source,
                "n_reference_normal": reference.n,
                "n_own_normal": normal.n,
            }
            log(
                f"localize {machine_type}: {unit_label(key)}: {normal.n} normal test "
                f"clips (needs {need}): referenced against {unit_label(source)}'s normal clips too"
            )
            continue
        per_id[key]["status"] = (
            f"not enough evidence: {normal.n} normal test clips (needs at least {need})"
        )
        log(f"localize {machine_type}: {unit_label(key)}: {per_id[key]['status']}")
    return kept


def domain_groups(by_id: dict, per_id: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """The units each domain calibrates on ("" for DCASE 2020 IDs): those with a reference of
    their own normal clips."""
    groups: dict[str, list[str]] = {}
    for key in by_id:
        if "reference" not in per_id[key]:
            groups.setdefault(unit_domain(key), []).append(key)
    return groups


def calibrate(
    by_id: dict, per_id: dict[str, dict[str, Any]], loc: dict[str, Any], mapper
) -> tuple[dict[str, tuple[float, float, np.ndarray]], dict[str, dict[str, Any]]]:
    """Pass 1: the clip-level threshold and region level per domain, each on its own normal
    clips (out of fold, pooled over the domain's units); records each unit's out-of-sample
    false-region rate in ``per_id``.

    A target domain with fewer than 1 / ``clip_false_region_rate`` normal clips in all cannot
    resolve that rate: it takes the source domain's calibration, and its units' false-region
    rate is measured at that threshold (their clips' out-of-fold levels). Units that borrow
    their section's source normal clips take the source calibration too.

    Returns the (threshold, cell level, band growth levels) per unit and a record per domain
    (for the report).
    """
    groups = domain_groups(by_id, per_id)
    need = int(np.ceil(1 / loc["clip_false_region_rate"]))
    record: dict[str, dict[str, Any]] = {}
    levels: dict[str, tuple[float, float, np.ndarray]] = {}
    for domain, units in groups.items():
        n_normal = sum(by_id[u][0].n for u in units)
        if domain == "target" and n_normal < need and "source" in groups:
            record[domain] = {"own": False, "n_normal": n_normal, "n_needed": need}
            continue
        # Each unit's clips are read in the worker that measures them; pooled here.
        measured = mapper(partial(unit_out_of_fold_levels, loc=loc), [by_id[u][0] for u in units])
        calibration = pool_calibration(dict(zip(units, measured, strict=True)), loc)
        levels[domain] = (
            calibration.threshold,
            calibration.cell_level,
            calibration.profile_levels,
        )
        record[domain] = {"own": True, "n_normal": n_normal, "n_needed": need}
        for unit, flagged in calibration.flagged.items():
            per_id[unit]["clip_false_region_rate"] = float(flagged.mean())
            per_id[unit]["n_normal_false_regions"] = int(flagged.sum())
    for domain, entry in record.items():
        entry["threshold_abs_z"], entry["cell_level_abs_z"] = levels.get(
            domain, levels.get("source", (None, None, None))
        )[:2]

    def used(unit: str) -> str:  # the domain whose calibration a unit uses
        own = unit_domain(unit)
        return own if own in levels and "reference" not in per_id[unit] else "source"

    by_unit = {u: levels[used(u)] for u in by_id}
    borrowing = [u for u in groups.get("target", []) if "target" not in levels]
    measured = mapper(partial(unit_out_of_fold_levels, loc=loc), [by_id[u][0] for u in borrowing])
    for unit, (unit_levels, *_) in zip(borrowing, measured, strict=True):
        flagged = unit_levels > by_unit[unit][0]
        per_id[unit]["clip_false_region_rate"] = float(flagged.mean())
        per_id[unit]["n_normal_false_regions"] = int(flagged.sum())
    for unit in by_id:
        per_id[unit]["calibration_domain"] = used(unit) if unit_domain(unit) else ""
    borrowed_false_regions(by_id, per_id, by_unit, loc)
    return by_unit, record


def borrowed_false_regions(
    by_id: dict, per_id: dict[str, dict[str, Any]], by_unit: dict, loc: dict[str, Any]
) -> None:
    """A unit that borrows its section's source normal clips: each of its own normal clips is
    judged against the source clips alone (which do not hold it), at the unit's threshold;
    those with a region are its false regions."""
    for unit, summary in per_id.items():
        reference = summary.get("reference")
        if not reference or unit not in by_id:
            continue
        normal = load_clips(by_id[unit][0])  # float64, as the workers compute
        n_ref = reference["n_reference_normal"]
        threshold, cell_level, band_levels = by_unit[unit]
        _, levels = detect_regions(
            normal[:n_ref], normal[n_ref:], threshold, loc, cell_level, band_levels=band_levels
        )
        flagged = levels > threshold
        summary["clip_false_region_rate"] = float(flagged.mean())
        summary["n_normal_false_regions"] = int(flagged.sum())


def type_summary(
    machine_type: str,
    per_id: dict[str, Any],
    rows: list[dict[str, Any]],
    calibration: tuple[float | None, float | None],
    loc: dict[str, Any],
    geometry: MelGeometry,
    has_ground_truth: bool,
) -> dict[str, Any]:
    """``TYPE.json``: the type's clip-level summary, its calibration, and ``ids``."""
    found_rows = [r for r in rows if r["found"]]
    type_feats = {c: np.array([r[c] for r in found_rows], dtype=float) for c in FEATURE_COLUMNS}
    ious = [r["iou"] for r in rows if r.get("iou") is not None]
    calibrated = [s for s in per_id.values() if "clip_false_region_rate" in s]
    n_normal_cal = sum(s["n_normal"] for s in calibrated)
    threshold, cell_level = calibration
    return {
        "machine_type": machine_type,
        "n_anomaly": len(rows),
        "n_regions_found": len(found_rows),
        "no_region_share": float(1 - len(found_rows) / len(rows)) if rows else None,
        "pattern": classify_pattern(type_feats, geometry.target_T),
        "has_ground_truth": has_ground_truth,
        "mean_iou": float(np.mean(ious)) if ious else None,
        "clip_threshold_abs_z": threshold,
        "clip_region_level_abs_z": cell_level,
        "clip_false_region_rate_target": loc["clip_false_region_rate"],
        "clip_false_region_rate": (
            sum(s["n_normal_false_regions"] for s in calibrated) / n_normal_cal
            if n_normal_cal
            else None
        ),
        "n_normal_calibration": n_normal_cal,
        "id_level_alpha": loc["id_level_alpha"],
        "ids": per_id,
    }


def localize(
    params: dict[str, Any],
    machine_type: str,
    features_dir: str | Path | None = None,
    out_dir: str | Path = "build/localization",
) -> Path:
    """Localize the anomalies of one machine type; write ``build/localization/TYPE.*``.

    Parameters
    ----------
    params
        Validated params; reads ``localization.*`` and the mel geometry in ``features.*``.
    """
    loc = params["localization"]
    geometry = MelGeometry.from_params(params)
    features_dir = Path(features_dir or f"build/features/{machine_type}")
    truth_by_file = read_ground_truth(features_dir)
    test = read_test_features(features_dir)
    by_id, per_id = split_by_id(test, loc, machine_type, features_dir / "test.npz")
    by_unit: dict[str, tuple[float, float, np.ndarray]] = {}
    record: dict[str, dict[str, Any]] = {}
    arrays = LocalizationArrays(np.zeros((0, *geometry.spectrogram_shape), bool), [])
    rows: list[dict[str, Any]] = []
    regions: list[np.ndarray] = []
    with contextlib.ExitStack() as stack:
        mapper = parallel_map(stack, min(resolve_n_jobs(loc["n_jobs"]), len(by_id)))
        if by_id:  # pass 1: the clip-level calibration (same bytes on any number of cores)
            by_unit, record = calibrate(by_id, per_id, loc, mapper)
        tasks = id_tasks(machine_type, by_id, by_unit, loc, geometry, truth_by_file)
        for machine_id, result in zip(by_id, mapper(localize_id, tasks), strict=True):
            if "status" in result:  # pass 2, per ID; map() keeps their order
                per_id[machine_id]["status"] = result["status"]
                log(f"localize {machine_type}: {machine_id}: {result['status']}")
                continue
            arrays.maps[machine_id], arrays.pooled[machine_id] = result["maps"], result["pooled"]
            rows.extend(result["rows"])
            regions.append(result["regions"])
            arrays.region_files.extend(by_id[machine_id][2])
            per_id[machine_id].update(result["summary"])
    add_clip_fields(rows, test)
    if regions:
        arrays = LocalizationArrays(
            np.concatenate(regions), arrays.region_files, arrays.maps, arrays.pooled
        )
    main = record.get("", record.get("source", {}))
    summary = type_summary(
        machine_type,
        per_id,
        rows,
        (main.get("threshold_abs_z"), main.get("cell_level_abs_z")),
        loc,
        geometry,
        bool(truth_by_file),
    )
    summary["calibration_by_domain"] = {d: r for d, r in record.items() if d}
    write_localization(Path(out_dir), machine_type, arrays, rows, summary)
    log_summary(machine_type, summary, rows, len(by_id))
    return Path(out_dir)


def id_tasks(machine_type: str, by_id, by_unit, loc, geometry, truth_by_file) -> list[IdTask]:
    """One task per machine ID for the pool: its normal and anomalous clips and files, the
    calibrated thresholds of its unit, and the ground truth of its files (where known)."""
    return [
        IdTask(
            machine_type,
            mid,
            normal,
            anomaly,
            files,
            *by_unit[mid],
            loc,
            geometry,
            {f: truth_by_file[f] for f in files if f in truth_by_file},
        )
        for mid, (normal, anomaly, files) in by_id.items()
    ]


def log_summary(
    machine_type: str, summary: dict[str, Any], rows: list[dict[str, Any]], n_ids: int
) -> None:
    """One line: clip-level regions, the false-region rate, ID-level regions, IoU."""
    n_pooled = sum(1 for s in summary["ids"].values() if pooled_part(s, "all").found)
    rate = summary["clip_false_region_rate"]
    log(
        f"localize {machine_type}: clip-level regions in {summary['n_regions_found']}/{len(rows)} "
        f"anomalous clips (false-region rate on held-out normals "
        f"{'n/a' if rate is None else f'{rate:.1%}'}); ID-level regions in {n_pooled}/{n_ids} IDs"
        + (
            f"; mean IoU with ground truth {summary['mean_iou']:.2f}"
            if summary["mean_iou"] is not None
            else ""
        )
    )
