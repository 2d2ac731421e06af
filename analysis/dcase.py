"""The DCASE 2020 Task 2 development-set layout: machine IDs, clip names, discovery.

Layout: ``ROOT/<machine_type>/train/normal_id_XX_NNNNNNNN.wav`` and
``ROOT/<machine_type>/test/{normal,anomaly}_id_XX_NNNNNNNN.wav``; train holds
normal clips only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MACHINE_IDS: dict[str, tuple[str, ...]] = {
    "fan": ("id_00", "id_02", "id_04", "id_06"),
    "pump": ("id_00", "id_02", "id_04", "id_06"),
    "slider": ("id_00", "id_02", "id_04", "id_06"),
    "valve": ("id_00", "id_02", "id_04", "id_06"),
    "ToyCar": ("id_01", "id_02", "id_03", "id_04"),
    "ToyConveyor": ("id_01", "id_02", "id_03"),
}

# ASCII digits only: Python's \d also matches Arabic-Indic and other Unicode digits.
CLIP_NAME = re.compile(
    r"^(?P<label>normal|anomaly)_(?P<machine_id>id_[0-9]{2})_(?P<index>[0-9]{8})\.wav$"
)
# The evaluation set's test names carry no label: they cannot be used here.
UNLABELLED_NAME = re.compile(r"^id_[0-9]{2}_[0-9]{8}\.wav$")
UNLABELLED_REASON = (
    "no normal/anomaly label (an evaluation-set name, id_XX_NNNNNNNN.wav): "
    "this analysis needs the labelled development set"
)
SPLITS = ("train", "test")
DANGLING_REASON = "a link to a file that does not exist"


def dangling_links(root: str | Path, machine_type: str) -> list[str]:
    """Links under ``ROOT/TYPE/{train,test}/`` that point at nothing (relative to ``root``)."""
    out = []
    for split in SPLITS:
        folder = Path(root) / machine_type / split
        if folder.is_dir():
            out += [
                p.relative_to(root).as_posix()
                for p in sorted(folder.iterdir())
                if p.is_symlink() and not p.exists()
            ]
    return out


# Columns of ground_truth.csv (the synthetic default writes it; real data has an empty one).
# clip_strength_db: the anomaly gain the clip drew (dB, before the injection; gain_db is what
# was measured in the region after it).
GROUND_TRUTH_COLUMNS = (
    "file",
    "kind",
    "f_lo_hz",
    "f_hi_hz",
    "t_start_s",
    "t_end_s",
    "gain_db",
    "clip_strength_db",
)


class DataLayoutError(FileNotFoundError):
    """The data root does not hold the DCASE layout for a machine type."""


@dataclass(frozen=True)
class Clip:
    file: str  # path relative to the data root, POSIX separators
    split: str  # train | test
    label: int  # 0 normal, 1 anomaly
    machine_id: str  # id_00


def clip_name(label: int, machine_id: str, index: int) -> str:
    return f"{'anomaly' if label else 'normal'}_{machine_id}_{index:08d}.wav"


def parse_clip_name(name: str) -> tuple[int, str] | None:
    """``(label, machine_id)`` of a DCASE clip file name, or None if it does not parse."""
    match = CLIP_NAME.match(name)
    if match is None:
        return None
    return (1 if match["label"] == "anomaly" else 0), match["machine_id"]


def printable_name(name: str) -> str:
    """A file name that can be written as UTF-8: undecodable bytes shown as ``\\xNN``.

    On POSIX, a name that is not valid UTF-8 comes back from the OS with surrogate
    escapes, which cannot be encoded again; written to a CSV or a report it would crash.
    """
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        raw = name.encode("utf-8", "surrogateescape")
        return raw.decode("utf-8", "backslashreplace")


def discover_clips(root: str | Path, machine_type: str) -> tuple[list[Clip], list[tuple[str, str]]]:
    """List the clips of one machine type, strictly.

    Returns
    -------
    clips
        Usable-looking clips sorted by file name (split, then name).
    skipped
        ``(file, reason)`` for every file that is not a valid clip of its split.
    """
    root = Path(root)
    type_dir = root / machine_type
    if not type_dir.is_dir():
        raise DataLayoutError(
            f"{type_dir}: no such folder (expected ROOT/{machine_type}/{{train,test}}/)"
        )
    clips: list[Clip] = []
    skipped: list[tuple[str, str]] = []
    for split in SPLITS:
        split_dir = type_dir / split
        if not split_dir.is_dir():
            raise DataLayoutError(
                f"{split_dir}: no such folder (expected ROOT/{machine_type}/{split}/)"
            )
        for path in sorted(split_dir.iterdir()):
            rel = path.relative_to(root).as_posix()
            if printable_name(rel) != rel:
                skipped.append((printable_name(rel), "file name is not valid UTF-8"))
                continue
            if path.is_symlink() and not path.exists():
                skipped.append((rel, DANGLING_REASON))
                continue
            if path.is_dir():
                skipped.append((rel, "a folder, not a clip"))
                continue
            parsed = parse_clip_name(path.name)
            if parsed is None and UNLABELLED_NAME.match(path.name):
                skipped.append((rel, UNLABELLED_REASON))
                continue
            if parsed is None:
                skipped.append((rel, "name does not parse as {normal,anomaly}_id_XX_NNNNNNNN.wav"))
                continue
            label, machine_id = parsed
            if split == "train" and label == 1:
                skipped.append((rel, "anomaly clip in train (train holds normal clips only)"))
                continue
            clips.append(Clip(rel, split, label, machine_id))
    return clips, skipped
