"""The DCASE Task 2 layouts: machine IDs, sections and domains, clip names, discovery.

``dcase2020``: ``ROOT/<machine_type>/train/normal_id_XX_NNNNNNNN.wav`` and
``ROOT/<machine_type>/test/{normal,anomaly}_id_XX_NNNNNNNN.wav``; train holds
normal clips only. The unit of analysis is the machine ID (unit key ``id_00``).

``dcase2021+`` (DCASE 2021-2025 Task 2, MIMII DUE, ToyADMOS2):
``section_SS_{source,target}_{train,test}_{normal,anomaly}_NNNN[_attributes].wav``
under ``train/`` and ``test/`` (2021: ``source_test/`` and ``target_test/``), from 2023
with ``attributes_SS.csv`` beside them. The unit is (section, domain), unit key
``section_00_source``; :func:`unit_label` is the one place that turns a unit key into
the reader's label.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, replace
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
LAYOUTS = ("auto", "dcase2020", "dcase2021+")
SECTION_LAYOUT = "dcase2021+"
# Folders that hold clips in the section layouts (2021 keeps test clips per domain) -> split.
SECTION_FOLDERS = {"train": "train", "test": "test", "source_test": "test", "target_test": "test"}
SECTION_NAME = re.compile(
    r"^section_(?P<section>[0-9]{2})_(?P<domain>source|target)_(?P<split>train|test)_"
    r"(?P<label>normal|anomaly)_(?P<index>[0-9]{4})(?:_(?P<attributes>[^/]+))?\.wav$"
)
# Evaluation-set test names carry no label (2021: section_SS_{source,target}_test_NNNN).
SECTION_UNLABELLED_NAME = re.compile(
    r"^section_[0-9]{2}_(?:(?:source|target)_test_)?[0-9]{4}(?:_[^/]+)?\.wav$"
)
SECTION_UNLABELLED_REASON = (
    "no normal/anomaly label (an evaluation-set name, section_SS_NNNN.wav): "
    "this analysis needs the labelled development set"
)
UNIT_KEY = re.compile(r"^section_(?P<section>[0-9]{2})_(?P<domain>source|target)$")
DANGLING_REASON = "a link to a file that does not exist"


def dangling_links(root: str | Path, machine_type: str) -> list[str]:
    """Links under ``ROOT/TYPE/{train,test}/`` that point at nothing (relative to ``root``)."""
    out = []
    for split in SECTION_FOLDERS:
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
    machine_id: str  # the unit key: id_00 (2020) or section_00_source (2021+)
    section: str = ""  # "00" in the section layouts, "" in 2020
    domain: str = ""  # source | target in the section layouts, "" in 2020
    attributes: str = ""  # "key=value; ..." from the name and attributes_SS.csv


def unit_key(section: str, domain: str) -> str:
    """The unit key of a section layout's (section, domain): ``section_00_source``."""
    return f"section_{section}_{domain}"


def unit_label(key: str) -> str:
    """The reader's label of a unit key: "section 00 (source)", or the key itself ("id_00").

    The one place that turns a unit key into words; the report and figures use it.
    """
    match = UNIT_KEY.match(str(key))
    if match is None:
        return str(key)
    return f"section {match['section']} ({match['domain']})"


@dataclass(frozen=True)
class UnitWords:
    """How the report names its unit of analysis in running text, per layout: the machine
    ID (2020) or a section in one domain (2021+), so that no sentence says "ID" of a
    section. ``count(n)`` is "1 ID" / "3 IDs" or "1 unit" / "3 units"."""

    one: str  # "machine ID" | "section (domain)": column headers, "per ..."
    many: str  # "machine IDs" | "sections (by domain)"
    short: str  # "ID" | "unit": "the ID's normal clips", "within-ID"
    shorts: str  # "IDs" | "units"
    level: str  # "ID level" | "unit level": the pooled test's level
    article: str = "a"  # before ``short`` as it is spoken: "an ID", "a unit"

    def count(self, n: int) -> str:
        return f"{n} {self.short if n == 1 else self.shorts}"

    @property
    def a_short(self) -> str:
        """The short noun with its indefinite article: "an ID" / "a unit"."""
        return f"{self.article} {self.short}"

    def evidence(self, stored: str) -> str:
        """A stored evidence level ("clip-level", "ID-level") in these words."""
        return {"clip-level": "clip level", "ID-level": self.level}.get(stored, stored)


ID_WORDS = UnitWords("machine ID", "machine IDs", "ID", "IDs", "ID level", article="an")
SECTION_WORDS = UnitWords("section (domain)", "sections (by domain)", "unit", "units", "unit level")


def unit_words(keys) -> UnitWords:
    """The words for a set of unit keys: :data:`SECTION_WORDS` when any is a section unit."""
    return SECTION_WORDS if any(UNIT_KEY.match(str(k)) for k in keys) else ID_WORDS


def unit_domain(key: str) -> str:
    """``source`` or ``target`` for a section unit key, "" for a 2020 machine ID."""
    match = UNIT_KEY.match(str(key))
    return match["domain"] if match else ""


def unit_section(key: str) -> str:
    """The section ("00") of a section unit key, "" for a 2020 machine ID."""
    match = UNIT_KEY.match(str(key))
    return match["section"] if match else ""


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


def detect_layout(root: str | Path, machine_type: str) -> str:
    """``dcase2021+`` when the type has a 2021 per-domain test folder or any ``section_`` clip
    name, else ``dcase2020``."""
    type_dir = Path(root) / machine_type
    if (type_dir / "source_test").is_dir() or (type_dir / "target_test").is_dir():
        return SECTION_LAYOUT
    for folder in SPLITS:
        if (type_dir / folder).is_dir() and any(
            p.name.startswith("section_") for p in (type_dir / folder).iterdir()
        ):
            return SECTION_LAYOUT
    return "dcase2020"


def resolve_layout(root: str | Path, machine_type: str, layout: str) -> str:
    """``data.layout`` for one type: ``auto`` decided from its names, else as given."""
    return detect_layout(root, machine_type) if layout == "auto" else layout


def name_attributes(text: str | None) -> str:
    """Attributes from a clip name's tail: ``vel_6_loc_A`` -> "vel=6; loc=A" (pairs), any other
    tail kept as it is; DCASE's ``noAttribute`` is none."""
    if not text or text == "noAttribute":
        return ""
    tokens = text.split("_")
    if len(tokens) % 2:
        return text
    return "; ".join(f"{k}={v}" for k, v in zip(tokens[::2], tokens[1::2], strict=True))


def read_attribute_files(type_dir: Path) -> dict[str, str]:
    """Clip base name -> "key=value; ..." from every ``attributes_SS.csv`` (DCASE 2023+:
    ``file_name,d1p,d1v,d2p,d2v,...``) in a type's folder."""
    out: dict[str, str] = {}
    for path in sorted(type_dir.glob("attributes_*.csv")):
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                name = Path(row.get("file_name") or "").name
                pairs = [
                    (row[k], row.get(f"{k[:-1]}v", ""))
                    for k in row
                    if k
                    and re.fullmatch(r"d[0-9]+p", k)
                    and row[k] not in (None, "", "noAttribute")
                ]
                if name:
                    out[name] = "; ".join(f"{k}={v}" for k, v in pairs)
    return out


def classify_section_clip(name: str, folder: str, attributes: dict[str, str]) -> Clip | str:
    """A section-layout clip (``file`` left empty), or the reason it cannot be used."""
    match = SECTION_NAME.match(name)
    if match is None:
        if SECTION_UNLABELLED_NAME.match(name):
            return SECTION_UNLABELLED_REASON
        return (
            "name does not parse as "
            "section_SS_{source,target}_{train,test}_{normal,anomaly}_NNNN[_attributes].wav"
        )
    split = SECTION_FOLDERS[folder]
    if match["split"] != split:
        return f"a {match['split']} clip in {folder}/"
    if folder in ("source_test", "target_test") and not folder.startswith(match["domain"]):
        return f"a {match['domain']}-domain clip in {folder}/"
    label = 1 if match["label"] == "anomaly" else 0
    if split == "train" and label == 1:
        return "anomaly clip in train (train holds normal clips only)"
    attrs = attributes.get(name, name_attributes(match["attributes"]))
    key = unit_key(match["section"], match["domain"])
    return Clip("", split, label, key, match["section"], match["domain"], attrs)


def classify_2020_clip(name: str, split: str) -> Clip | str:
    """A DCASE 2020 clip (``file`` left empty), or the reason it cannot be used."""
    parsed = parse_clip_name(name)
    if parsed is None and UNLABELLED_NAME.match(name):
        return UNLABELLED_REASON
    if parsed is None:
        return "name does not parse as {normal,anomaly}_id_XX_NNNNNNNN.wav"
    label, machine_id = parsed
    if split == "train" and label == 1:
        return "anomaly clip in train (train holds normal clips only)"
    return Clip("", split, label, machine_id)


def discover_clips(
    root: str | Path, machine_type: str, layout: str = "auto"
) -> tuple[list[Clip], list[tuple[str, str]]]:
    """List the clips of one machine type, strictly, in the given ``data.layout``.

    Returns
    -------
    clips
        Usable-looking clips sorted by file name (folder, then name).
    skipped
        ``(file, reason)`` for every file that is not a valid clip of its folder.
    """
    root = Path(root)
    type_dir = root / machine_type
    if not type_dir.is_dir():
        raise DataLayoutError(
            f"{type_dir}: no such folder (expected ROOT/{machine_type}/{{train,test}}/)"
        )
    layout = resolve_layout(root, machine_type, layout)
    sections = layout == SECTION_LAYOUT
    folders = [f for f in SECTION_FOLDERS if f in SPLITS or (sections and (type_dir / f).is_dir())]
    if sections and not (type_dir / "test").is_dir() and len(folders) > 2:
        folders.remove("test")  # DCASE 2021: test clips only in source_test/ and target_test/
    attributes = read_attribute_files(type_dir) if sections else {}
    clips: list[Clip] = []
    skipped: list[tuple[str, str]] = []
    for folder in folders:
        split_dir = type_dir / folder
        if not split_dir.is_dir():
            raise DataLayoutError(
                f"{split_dir}: no such folder (expected ROOT/{machine_type}/{folder}/)"
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
            if sections:
                found = classify_section_clip(path.name, folder, attributes)
            else:
                found = classify_2020_clip(path.name, folder)
            if isinstance(found, str):
                skipped.append((rel, found))
                continue
            clips.append(replace(found, file=rel))
    return clips, skipped
