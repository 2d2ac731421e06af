"""The synthetic default in the DCASE 2021+ section layout (``synthetic.layout: dcase2021+``).

:func:`to_section_layout` renames the clips that ``synthesize`` wrote in the 2020 naming
(``{normal,anomaly}_id_XX_NNNNNNNN.wav``) onto the section names
``section_SS_{source,target}_{train,test}_{normal,anomaly}_NNNN_load_V.wav``:

* the k-th machine ID of a type becomes section k (``id_00`` of fan -> ``section_00``);
* per section the last ``max(1, n // 6)`` train clips go to the target domain (the section
  layouts have few target train clips), and the second half of each test label;
* every clip carries one attribute, ``load``: 1 or 2 (alternating) in the source domain,
  3 in the target domain, in its name and in the section's ``attributes_SS.csv``
  (the DCASE 2023+ form: ``file_name,d1p,d1v``).

The target domain is a real, if simple, domain shift (:func:`shift_to_target`): every
target clip, normal or anomalous, passes through a fixed low shelf that raises the machine's
sound below about :data:`TARGET_SHELF_HZ` by :data:`TARGET_SHELF_DB` (a heavier load), so a
target unit's normal clips differ from its source normals the way a changed operating
condition does. The filter is linear and time-invariant: the anomaly regions of the ground
truth stay where they were written.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from analysis.dcase import MACHINE_IDS, parse_clip_name

TARGET_LOAD = "3"
TARGET_SHELF_HZ = 500.0  # the target domain's low shelf: corner frequency
TARGET_SHELF_DB = 6.0  # and gain below it (the sound above the corner is unchanged)


def shift_to_target(samples: np.ndarray, sr: int) -> np.ndarray:
    """The target domain's shift: ``samples`` through a first-order low shelf (gain
    :data:`TARGET_SHELF_DB` below :data:`TARGET_SHELF_HZ`, 0 dB far above it), as the
    sum of the clip and a first-order Butterworth low-passed copy of it (bilinear, so the
    copy vanishes at the Nyquist frequency). Clipped to the WAV range."""
    from scipy.signal import butter, lfilter  # here: scipy.signal loads scipy.stats

    b, a = butter(1, TARGET_SHELF_HZ, fs=sr)
    low = lfilter(b, a, samples)
    extra = 10.0 ** (TARGET_SHELF_DB / 20.0) - 1.0
    return np.clip(samples + extra * low, -1.0, 1.0)


def _shift_file(path: Path) -> None:
    """Rewrite one WAV file with :func:`shift_to_target` applied (same rate and subtype)."""
    info = sf.info(path)
    samples, sr = sf.read(path, dtype="float64")
    buffer = io.BytesIO()
    sf.write(buffer, shift_to_target(samples, sr), sr, subtype=info.subtype, format="WAV")
    path.write_bytes(buffer.getvalue())


def target_counts(n_clips: int, split: str) -> int:
    """Clips of one (section, split, label) group that go to the target domain."""
    return max(1, n_clips // 6) if split == "train" else n_clips - math.ceil(n_clips / 2)


def plan_renames(machine_type: str, files: list[str]) -> list[tuple[str, str, str, str]]:
    """``(old file, new file, section, load)`` for every clip of a type (files relative to the
    data root, in the 2020 naming), in a fixed order."""
    groups: dict[tuple[str, str, int], list[str]] = defaultdict(list)
    for file in sorted(files):
        split, name = file.split("/")[-2:]
        label, machine_id = parse_clip_name(name)
        groups[(machine_id, split, label)].append(file)
    out = []
    for (machine_id, split, label), members in sorted(groups.items()):
        section = f"{MACHINE_IDS[machine_type].index(machine_id):02d}"
        n_target = target_counts(len(members), split)
        counters = {"source": 0, "target": 0}
        for i, file in enumerate(members):
            domain = "target" if i >= len(members) - n_target else "source"
            load = TARGET_LOAD if domain == "target" else str(1 + counters[domain] % 2)
            name = (
                f"section_{section}_{domain}_{split}_{'anomaly' if label else 'normal'}_"
                f"{counters[domain]:04d}_load_{load}.wav"
            )
            counters[domain] += 1
            out.append((file, f"{machine_type}/{split}/{name}", section, load))
    return out


def to_section_layout(
    root: Path, truth: dict[str, list[dict[str, Any]]]
) -> dict[str, list[dict[str, Any]]]:
    """Rename every clip under ``root`` to the section layout, write ``attributes_SS.csv``
    per section, and return the ground-truth rows with the new file names."""
    out: dict[str, list[dict[str, Any]]] = {}
    for machine_type, rows in truth.items():
        files = [
            p.relative_to(root).as_posix() for p in sorted((root / machine_type).glob("*/*.wav"))
        ]
        plan = plan_renames(machine_type, files)
        renamed = {old: new for old, new, _, _ in plan}
        by_section: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for old, new, section, load in plan:
            (root / old).rename(root / new)
            if load == TARGET_LOAD:
                _shift_file(root / new)
            by_section[section].append((new, load))
        for section, entries in sorted(by_section.items()):
            with open(root / machine_type / f"attributes_{section}.csv", "w", newline="") as fh:
                writer = csv.writer(fh, lineterminator="\n")
                writer.writerow(["file_name", "d1p", "d1v"])
                writer.writerows([file, "load", load] for file, load in sorted(entries))
        out[machine_type] = [{**row, "file": renamed[row["file"]]} for row in rows]
    return out
