"""Stage ``extract@TYPE``: log-mel features of one machine type.

Reads the DCASE layout under ``data.root``, computes the detector's log-mel
(see :mod:`analysis.mel`) for every clip, per-mel-bin mean/std over all train
frames (streamed: train spectrograms are never held together), and writes the
normalized test set. Clips that cannot be used are listed with a reason in
``skipped.csv``; nothing is dropped silently.

Outputs in ``build/features/TYPE/``: ``test.npz``, ``train_stats.npz``,
``skipped.csv``, ``ground_truth.csv`` (a copy, header only for real data) and
``source.json`` (counts, data fingerprint, warnings).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from analysis.artifacts import TestFeatures, TrainStats, write_features
from analysis.audio import STD_FLOOR_DB, ChunkResult, log_mels_of_files, normalize_clip, warm_up
from analysis.checks import check_mel_filters
from analysis.dcase import (
    SECTION_UNLABELLED_REASON,
    UNLABELLED_REASON,
    Clip,
    DataLayoutError,
    discover_clips,
    resolve_layout,
    unit_label,
)
from analysis.io import Progress, atomic_dir, iter_chunks, log
from analysis.mel import MelGeometry
from analysis.workers import parallel_map, resolve_n_jobs

CHUNK_CLIPS = 16  # fixed, so chunked sums do not depend on the number of processes


def _process_chunk(task: tuple[str, list[str], MelGeometry, float, bool]) -> ChunkResult:
    return log_mels_of_files(*task)


def merge_moments(
    count_a: int,
    mean_a: np.ndarray,
    m2_a: np.ndarray,
    count_b: int,
    mean_b: np.ndarray,
    m2_b: np.ndarray,
) -> tuple[int, np.ndarray, np.ndarray]:
    """Chan et al.'s pairwise merge of (count, mean, sum of squared deviations)."""
    count = count_a + count_b
    delta = mean_b - mean_a
    mean = mean_a + delta * (count_b / count)
    m2 = m2_a + m2_b + delta**2 * (count_a * count_b / count)
    return count, mean, m2


def data_fingerprint(files: list[str]) -> str:
    """SHA-256 of the sorted list of discovered file paths (names, not contents)."""
    return hashlib.sha256("\n".join(sorted(files)).encode()).hexdigest()


def extract(
    params: dict[str, Any],
    machine_type: str,
    data_root: str | Path | None = None,
    out_dir: str | Path | None = None,
) -> Path:
    """Extract features of one machine type into ``build/features/TYPE``.

    Parameters
    ----------
    params
        Validated params; reads ``features.*``, ``data.root`` and ``data.layout``.
    machine_type
        A folder under the data root.
    data_root, out_dir
        Overrides of ``data.root`` and of the output folder.
    """
    geometry = MelGeometry.from_params(params)
    check_mel_filters(geometry)  # also in check-params; here for a stage run by hand
    features = params["features"]
    root = Path(data_root or params["data"]["root"])
    out_dir = Path(out_dir or f"build/features/{machine_type}")
    layout = resolve_layout(root, machine_type, params["data"]["layout"])
    log(f"extract {machine_type}: layout {layout} ({params['data']['layout']})")
    clips, skipped = discover_clips(root, machine_type, layout)
    train = [c for c in clips if c.split == "train"]
    test = [c for c in clips if c.split == "test"]
    n_jobs = resolve_n_jobs(features["n_jobs"])
    progress = Progress(f"extract {machine_type}: clips", len(clips))
    notes: Counter = Counter()

    warm_up(geometry)
    count, mean, std, kept, logmel, n_frames = two_passes(
        root, machine_type, train, test, geometry, features, skipped, notes, progress
    )
    skipped.sort()
    progress.close(f"{len(skipped)} skipped, {n_jobs} processes")

    warnings = logged_warnings(machine_type, train, kept, skipped)
    truth = root / machine_type / "ground_truth.csv"
    with atomic_dir(out_dir) as tmp:
        write_features(
            tmp,
            features_record(kept, logmel, n_frames, layout),
            TrainStats(
                mean.astype(np.float32), std.astype(np.float32), count, n_train_used(clips, skipped)
            ),
            skipped,
            truth if truth.is_file() else None,
            source_summary(root, machine_type, clips, kept, skipped, notes, warnings)
            | {"layout": layout, "layout_param": params["data"]["layout"]},
        )
    log(f"extract {machine_type}: {len(kept)} test clips -> {out_dir}")
    return out_dir


def logged_warnings(machine_type: str, train, kept, skipped) -> list[str]:
    """The type's ID warnings (an ID without usable train clips, …) and every skipped clip
    with its reason, logged; returns the warnings for the source summary."""
    unusable = {f for f, _ in skipped}
    train_ids = {c.machine_id for c in train if c.file not in unusable}
    warnings = id_warnings(kept, skipped, train_ids)
    for message in warnings:
        log(f"warning: {machine_type}: {message}")
    for file, reason in skipped:
        log(f"skipped: {file}: {reason}")
    return warnings


def features_record(kept, logmel, n_frames, layout: str) -> TestFeatures:
    """The test clips' record: their normalized log-mels with each clip's label, ID, file,
    real frame count, section, domain and attributes, in the order they were kept."""
    return TestFeatures(
        logmel,
        np.array([c.label for c in kept], dtype=np.int8),
        np.array([c.machine_id for c in kept], dtype=str),
        np.array([c.file for c in kept], dtype=str),
        n_frames,
        np.array([c.section for c in kept], dtype=str),
        np.array([c.domain for c in kept], dtype=str),
        np.array([c.attributes for c in kept], dtype=str),
        layout,
    )


def two_passes(root, machine_type, train, test, geometry, features, skipped, notes, progress):
    """Pass 1: per-bin train moments (streamed); pass 2: the normalized test log-mels.

    Returns (train frame count, mean, std, kept test clips, their log-mels, real frames).
    """
    n_jobs = resolve_n_jobs(features["n_jobs"])
    with contextlib.ExitStack() as stack:
        mapper = parallel_map(stack, n_jobs)  # same bytes on any number of cores

        def run(group: list[Clip], keep_logmels: bool):
            tasks = [
                (
                    str(root),
                    [c.file for c in chunk],
                    geometry,
                    features["min_duration_s"],
                    keep_logmels,
                )
                for chunk in iter_chunks(group, CHUNK_CLIPS)
            ]
            return mapper(_process_chunk, tasks)

        count, mean, m2 = train_moments(
            run(train, keep_logmels=False), geometry.n_mels, skipped, notes, progress
        )
        if count == 0:
            raise DataLayoutError(
                f"{root / machine_type / 'train'}: no usable train clips, cannot normalize"
            )
        std = np.sqrt(m2 / count)
        kept, logmel, n_frames = normalized_test(
            run(test, keep_logmels=True),
            test,
            geometry,
            (features["normalization"], mean, std),
            skipped,
            notes,
            progress,
        )
    return count, mean, std, kept, logmel, n_frames


def train_moments(chunks, n_mels, skipped, notes, progress) -> tuple[int, np.ndarray, np.ndarray]:
    """Pass 1: merge per-chunk (frames, mean, M2) of the train clips, in chunk order."""
    count, mean, m2 = 0, np.zeros(n_mels), np.zeros(n_mels)
    for chunk in chunks:
        skipped += [(f, reason) for f, reason in chunk.statuses if reason]
        notes.update(chunk.notes)
        if chunk.count:
            count, mean, m2 = merge_moments(count, mean, m2, chunk.count, chunk.mean, chunk.m2)
        progress.advance(len(chunk.statuses))
    return count, mean, m2


def normalized_test(chunks, test, geometry, normalization, skipped, notes, progress):
    """Pass 2: crop/pad and normalize the test log-mels (``normalization`` = (mode, mean, std))."""
    mode, mean, std = normalization
    # The stored float32 statistics are the ones applied, so padding (= mean) becomes exactly 0.
    mean = mean.astype(np.float32)
    divisor = np.maximum(std, STD_FLOOR_DB).astype(np.float32)
    kept: list[Clip] = []
    logmel = np.zeros((len(test), geometry.n_mels, geometry.target_T), dtype=np.float32)
    n_frames = np.zeros(len(test), dtype=np.int32)
    by_file = {c.file: c for c in test}
    for chunk in chunks:
        notes.update(chunk.notes)
        used = iter(chunk.logmels)
        for file, reason in chunk.statuses:
            if reason:
                skipped.append((file, reason))
                continue
            raw = next(used)
            i = len(kept)
            n_frames[i] = min(raw.shape[1], geometry.target_T)
            logmel[i] = normalize_clip(raw, geometry, mode, mean, divisor)
            kept.append(by_file[file])
        progress.advance(len(chunk.statuses))
    return kept, logmel[: len(kept)], n_frames[: len(kept)]


def n_train_used(clips: list[Clip], skipped: list[tuple[str, str]]) -> int:
    """Train clips used: those discovered as clips less those skipped while loading.

    Files that are not clips at all (``.DS_Store``, an anomaly clip in train) were
    never among ``clips``, so they are not subtracted a second time.
    """
    return len({c.file for c in clips if c.split == "train"} - {f for f, _ in skipped})


def id_warnings(
    kept: list[Clip],
    skipped: list[tuple[str, str]] | None = None,
    train_ids: set[str] | None = None,
) -> list[str]:
    """Say which machine IDs have no normal or no anomalous test clips or no usable train clip
    (``train_ids``: the IDs with one), and whether the type has no labelled test clip at all
    (an evaluation-set folder, for example)."""
    messages = []
    if not kept:
        unlabelled = sum(
            1
            for _, reason in skipped or []
            if reason in (UNLABELLED_REASON, SECTION_UNLABELLED_REASON)
        )
        why = (
            f"; {unlabelled} test files have evaluation-set names without a normal/anomaly "
            "label (this analysis needs the labelled development set)"
            if unlabelled
            else ""
        )
        messages.append(f"no usable labelled test clips{why}")
    elif not any(c.label for c in kept):
        messages.append("no anomalous test clips: nothing to localize")
    for machine_id in sorted({c.machine_id for c in kept}):
        labels = {c.label for c in kept if c.machine_id == machine_id}
        name = unit_label(machine_id)
        if 0 not in labels:
            messages.append(f"{name} has no normal test clips")
        if 1 not in labels:
            messages.append(f"{name} has no anomalous test clips")
        if train_ids is not None and machine_id not in train_ids:
            messages.append(
                f"{name} has test clips but no usable train clip: it is normalized with "
                "the other IDs' train statistics"
            )
    return messages


def source_summary(root, machine_type, clips, kept, skipped, notes, warnings) -> dict[str, Any]:
    all_files = [c.file for c in clips] + [
        f for f, _ in skipped if f not in {c.file for c in clips}
    ]
    per_id: dict[str, dict[str, int]] = {}
    for c in kept:
        entry = per_id.setdefault(c.machine_id, {"test_normal": 0, "test_anomaly": 0})
        entry["test_anomaly" if c.label else "test_normal"] += 1
    unusable = {f for f, _ in skipped}
    for c in clips:  # train clips used per unit (the section layouts' target domain has few)
        if c.split == "train" and c.file not in unusable and c.machine_id in per_id:
            per_id[c.machine_id]["train"] = per_id[c.machine_id].get("train", 0) + 1
    n_unlabelled = sum(r in (UNLABELLED_REASON, SECTION_UNLABELLED_REASON) for _, r in skipped)
    return {
        "machine_type": machine_type,
        "data_root": str(root),
        "synthetic": (root / "synthetic.json").is_file(),
        "n_files_seen": len(all_files),
        "n_train_used": n_train_used(clips, skipped),
        "n_test_used": len(kept),
        "n_skipped": len(skipped),
        "n_unlabelled": int(n_unlabelled),
        "n_resampled": int(notes["resampled"]),
        "n_downmixed": int(notes["downmixed"]),
        "per_id": per_id,
        "file_list_sha256": data_fingerprint(all_files),
        "warnings": warnings,
    }
