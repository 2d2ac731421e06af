"""DCASE 2021+ section layouts: discovery, units, per-domain calibration, the report's words.

The trees are written here: 2021 (test clips in ``source_test/``/``target_test/``, attributes in
the names), 2023+ (``attributes_SS.csv`` beside the clips), evaluation clips without labels,
and a target domain with 3 normal clips. Anomalies are a 3 kHz tone on a 1 kHz machine tone
(clearly found); anomalous clips whose attribute is ``spd=31V`` carry no tone (nothing to find).
"""

from __future__ import annotations

import csv
import html
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from analysis.artifacts import read_region_rows, read_test_features
from analysis.dcase import (
    SECTION_UNLABELLED_REASON,
    detect_layout,
    discover_clips,
    name_attributes,
    unit_label,
    unit_words,
)
from analysis.extract import extract
from analysis.localize import localize
from analysis.params import ParamsError, validate_params
from analysis.report_layout import attribute_rows, calibration_sentences
from analysis.synthetic_layout import (
    TARGET_SHELF_DB,
    TARGET_SHELF_HZ,
    plan_renames,
    shift_to_target,
)
from tests.conftest import tone_clip, write_tree
from tests.test_pipeline import make_project, repro

SECONDS = 2.0


def _write(path: Path, rng: np.random.Generator, extra_hz: float | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone_clip(rng, SECONDS, extra_hz=extra_hz), 16000, subtype="PCM_16")


def write_section_tree(
    root: Path,
    machine_type: str,
    year: int,
    n_normal: dict[str, int] | None = None,
    n_anomaly: int = 6,
    n_eval: int = 0,
    seed: int = 0,
) -> Path:
    """Sections 00 and 01; per section 4 source and 1 target train clips, ``n_normal`` normal
    and ``n_anomaly`` anomalous test clips per domain. 2021: per-domain test folders and
    ``vel_V_loc_L`` attributes in the names; 2023: ``noAttribute`` names and
    ``attributes_SS.csv`` giving ``spd`` (28V, or 31V for every other anomalous clip: those
    carry no anomaly) and ``mic``."""
    rng = np.random.default_rng(seed)
    n_normal = n_normal or {"source": 6, "target": 6}
    for section in ("00", "01"):
        rows = []
        groups = [("source", "train", "normal", 4), ("target", "train", "normal", 1)]
        for domain in ("source", "target"):
            groups += [(domain, "test", "normal", n_normal[domain])]
            groups += [(domain, "test", "anomaly", n_anomaly)]
        for domain, split, label, count in groups:
            for i in range(count):
                silent_anomaly = label == "anomaly" and i % 2 == 1
                stem = f"section_{section}_{domain}_{split}_{label}_{i:04d}"
                if year == 2021:
                    folder = split if split == "train" else f"{domain}_test"
                    name = f"{stem}_vel_{6 + i % 2}_loc_A.wav"
                else:
                    folder, name = split, f"{stem}_noAttribute.wav"
                    speed = "31V" if silent_anomaly else "28V"
                    rows.append([f"{machine_type}/{folder}/{name}", "spd", speed, "mic", "1"])
                extra = (
                    3000.0 if label == "anomaly" and not (year > 2021 and silent_anomaly) else None
                )
                _write(root / machine_type / folder / name, rng, extra)
        if rows:
            with open(root / machine_type / f"attributes_{section}.csv", "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["file_name", "d1p", "d1v", "d2p", "d2v"])
                writer.writerows(rows)
    for i in range(n_eval):
        _write(root / machine_type / "test" / f"section_00_{i:04d}.wav", rng, None)
    return root


def test_unit_labels_read_as_sections_and_ids():
    assert unit_label("section_03_target") == "section 03 (target)"
    assert unit_label("section_00_source") == "section 00 (source)"
    assert unit_label("id_00") == "id_00"
    assert name_attributes("vel_6_loc_A") == "vel=6; loc=A"
    assert name_attributes("noAttribute") == ""
    assert name_attributes("strength_1_ambient") == "strength_1_ambient"  # 2021: kept as is


def test_the_unit_words_follow_the_layout_with_the_right_article():
    ids, sections = unit_words(["id_00", "id_02"]), unit_words(["section_00_source"])
    assert (ids.a_short, ids.count(1), ids.count(3)) == ("an ID", "1 ID", "3 IDs")
    assert (sections.a_short, sections.count(2), sections.level) == (
        "a unit",
        "2 units",
        "unit level",
    )


def test_2021_layout_reads_per_domain_test_folders_and_name_attributes(tmp_path):
    root = write_section_tree(tmp_path, "ToyTrain", 2021)
    (tmp_path / "ToyTrain" / "source_test" / "section_00_target_test_normal_0099.wav").write_bytes(
        (
            tmp_path / "ToyTrain" / "train" / "section_00_source_train_normal_0000_vel_6_loc_A.wav"
        ).read_bytes()
    )
    assert detect_layout(root, "ToyTrain") == "dcase2021+"
    clips, skipped = discover_clips(root, "ToyTrain")
    units = {c.machine_id for c in clips}
    assert units == {f"section_{s}_{d}" for s in ("00", "01") for d in ("source", "target")}
    test = [c for c in clips if c.split == "test"]
    assert len(test) == 2 * 2 * (6 + 6)  # sections x domains x (normal + anomalous)
    assert sum(c.split == "train" and c.domain == "target" for c in clips) == 2
    assert {c.attributes for c in clips} == {"vel=6; loc=A", "vel=7; loc=A"}
    assert skipped == [
        (
            "ToyTrain/source_test/section_00_target_test_normal_0099.wav",
            "a target-domain clip in source_test/",
        )
    ]


def test_2023_attribute_files_and_unlabelled_evaluation_clips(tmp_path):
    root = write_section_tree(tmp_path, "bearing", 2023, n_eval=3)
    clips, skipped = discover_clips(root, "bearing", "dcase2021+")
    by_name = {Path(c.file).name: c for c in clips}
    assert by_name["section_00_source_test_anomaly_0001_noAttribute.wav"].attributes == (
        "spd=31V; mic=1"
    )
    assert by_name["section_01_target_test_anomaly_0000_noAttribute.wav"].attributes == (
        "spd=28V; mic=1"
    )
    assert [reason for _, reason in skipped] == [SECTION_UNLABELLED_REASON] * 3
    # The 2020 reader refuses the same names rather than misreading them.
    clips_2020, skipped_2020 = discover_clips(root, "bearing", "dcase2020")
    assert clips_2020 == [] and all("does not parse" in r for _, r in skipped_2020)


def test_a_2020_tree_is_detected_as_2020(tmp_path):
    write_tree(tmp_path, n_train=1, n_normal=1, n_anomaly=1, seconds=1.0)
    assert detect_layout(tmp_path, "fan") == "dcase2020"


def test_any_type_with_a_folder_is_accepted_and_the_synthetic_default_says_which_it_makes(
    default_params,
):
    raw = json.loads(json.dumps(default_params))
    raw["data"].update(root="/data/dcase2023", machine_types=["ToyTrain", "3DPrinter"])
    assert validate_params(raw)["data"]["machine_types"] == ["ToyTrain", "3DPrinter"]
    raw["data"]["root"] = "data/synthetic"
    with pytest.raises(ParamsError, match=r"^data.machine_types\[0\]: 'ToyTrain': the synthetic"):
        validate_params(raw)
    raw["data"].update(root="/x", machine_types=["../fan"])
    with pytest.raises(ParamsError, match=r"^data.machine_types\[0\]: '../fan' is not a folder"):
        validate_params(raw)
    raw["data"].update(machine_types=["fan"], layout="dcase2022")
    with pytest.raises(ParamsError, match=r"^data.layout: 'dcase2022' is not one of"):
        validate_params(raw)


def localized(params, root: Path, machine_type: str, tmp_path: Path):
    features = extract(params, machine_type, root, tmp_path / "features" / machine_type)
    localize(params, machine_type, features, tmp_path / "loc")
    summary = json.loads((tmp_path / "loc" / f"{machine_type}.json").read_text())
    return read_test_features(features), summary, read_region_rows(tmp_path / "loc", machine_type)


def test_a_target_domain_with_3_normal_clips_borrows_its_sections_source_normals(params, tmp_path):
    params["features"]["n_jobs"] = params["localization"]["n_jobs"] = 1
    root = write_section_tree(tmp_path / "data", "fan", 2021, n_normal={"source": 6, "target": 3})
    test, summary, rows = localized(params, root, "fan", tmp_path)
    assert test.layout == "dcase2021+"
    assert set(test.domain.tolist()) == {"source", "target"}
    target = summary["ids"]["section_00_target"]
    assert target["n_normal"] == 3 and target["status"] == "ok"
    assert target["reference"] == {
        "unit": "section_00_source",
        "n_reference_normal": 6,
        "n_own_normal": 3,
    }
    assert target["calibration_domain"] == "source"
    # Its own 3 normal clips, judged against the source normals alone: no tone, no region.
    assert target["n_normal_false_regions"] == 0
    # The planted 3 kHz tone is found in the target clips, at 3 kHz.
    target_rows = [r for r in rows if r["domain"] == "target"]
    assert sum(r["found"] for r in target_rows) >= 0.8 * len(target_rows)
    centres = [r["band_centre_hz"] for r in target_rows if r["found"]]
    assert abs(np.median(centres) - 3000) < 400, centres
    words = " ".join(calibration_sentences(summary))
    assert "section 00 (target) has only 3 normal test clips" in words
    assert "compared with section 00 (source)'s 6 normal clips and its own" in words
    # Every target unit borrows: no target-domain threshold of its own is set, the source's is used.
    assert set(summary["calibration_by_domain"]) == {"source"}
    assert "uses the source domain's threshold" in words


def test_a_target_domain_with_enough_normals_is_calibrated_on_its_own(params, tmp_path):
    params["features"]["n_jobs"] = params["localization"]["n_jobs"] = 1
    params["localization"]["clip_false_region_rate"] = 0.1  # needs 10 normal clips per domain
    root = write_section_tree(tmp_path / "data", "fan", 2021, n_normal={"source": 6, "target": 6})
    _, summary, _ = localized(params, root, "fan", tmp_path)
    record = summary["calibration_by_domain"]
    assert record["source"]["own"] and record["target"]["own"]
    assert record["target"]["n_normal"] == 12
    assert {s["calibration_domain"] for k, s in summary["ids"].items() if "target" in k} == {
        "target"
    }
    assert "calibrated on its own 12 normal test clips" in " ".join(calibration_sentences(summary))


def test_the_attribute_table_shows_where_the_found_regions_fall(params, tmp_path):
    params["features"]["n_jobs"] = params["localization"]["n_jobs"] = 1
    root = write_section_tree(tmp_path / "data", "bearing", 2023)
    _, _, rows = localized(params, root, "bearing", tmp_path)
    table = {r["attribute"]: r for r in attribute_rows(rows)}
    # 24 anomalous clips: half spd=28V with the tone, half spd=31V without (nothing to find).
    assert table["spd=28V"]["n_anomaly"] == table["spd=31V"]["n_anomaly"] == 12
    assert table["spd=28V"]["n_found"] >= 10
    assert table["spd=31V"]["n_found"] <= 1
    assert table["mic=1"]["n_anomaly"] == 24


def test_the_synthetic_set_maps_ids_onto_sections_with_few_target_train_clips():
    files = [f"fan/train/normal_id_02_{i:08d}.wav" for i in range(6)]
    files += [f"fan/test/anomaly_id_02_{i:08d}.wav" for i in range(5)]
    plan = plan_renames("fan", files)
    names = [Path(new).name for _, new, _, _ in plan]
    assert sum("_target_train_" in n for n in names) == 1  # max(1, 6 // 6)
    assert sum("_target_test_" in n for n in names) == 2  # the second half of 5
    assert all(n.startswith("section_01_") for n in names)  # id_02 is fan's second ID
    assert all(re.search(r"_load_[123]\.wav$", n) for n in names)


# ----------------------------------------------------------------------------- dvc repro


@pytest.fixture(scope="module")
def layouts_project(tmp_path_factory) -> Path:
    """One project whose data root holds a type per layout: fan (2020), ToyTrain (2021 names
    with attributes, a target domain with 3 normal clips), bearing (2023 with attribute files
    and unlabelled evaluation clips)."""
    work = tmp_path_factory.mktemp("layouts")
    root = work / "data" / "real"
    write_tree(root, "fan", n_train=4, n_normal=6, n_anomaly=6, seconds=SECONDS)
    write_section_tree(root, "ToyTrain", 2021, n_normal={"source": 6, "target": 3}, seed=1)
    write_section_tree(root, "bearing", 2023, n_eval=2, seed=2)
    make_project(
        work,
        **{"data.root": "data/real", "data.machine_types": ["fan", "ToyTrain", "bearing"]},
    )
    repro(work)
    return work


def _text(page: str) -> str:
    """The HTML's visible words, entities decoded and pandoc's curly apostrophes straight."""
    text = html.unescape(re.sub(r"<[^>]+>", " ", page)).replace("\u2019", "'")
    return re.sub(r"\s+", " ", text)


@pytest.mark.slow
def test_dvc_repro_reads_every_layout_and_the_report_says_so(layouts_project):
    text = _text((layouts_project / "report/_output/report.html").read_text())
    assert "DCASE 2020 Task 2 file layout: machine IDs for fan" in text
    assert (
        "DCASE 2021+ Task 2 file layout: sections with source and target domains for "
        "ToyTrain, bearing (detected from the clip names)" in text
    )
    for label in ("section 00 (source)", "section 01 (target)", "id_00"):
        assert label in text
    assert "section 00 (target) has only 3 normal test clips" in text
    assert "uses the source domain's threshold" in text
    assert "spd=28V" in text and "spd=31V" in text  # bearing's attribute table
    assert "vel=6" in text  # ToyTrain's attributes from the names
    assert SECTION_UNLABELLED_REASON.split(":")[0] in text  # evaluation clips listed, left out
    assert "bearing/test/section_00_0000.wav" in text


@pytest.mark.slow
def test_dvc_repro_on_the_synthetic_default_in_the_section_layout(tmp_path):
    # 4 normal test clips per domain: enough for each unit's own reference.
    counts = {"synthetic.test_normal_clips_per_id": 8, "synthetic.test_anomaly_clips_per_id": 8}
    work = make_project(tmp_path, **{"synthetic.layout": "dcase2021+", **counts})
    repro(work)
    assert (work / "data/synthetic/fan/attributes_00.csv").is_file()
    text = _text((work / "report/_output/report.html").read_text())
    assert "sections with source and target domains" in text
    assert "section 00 (source)" in text and "section 01 (target)" in text
    assert "load=3" in text  # the target domain's attribute value, in the attribute table
    # It reads for sections throughout: no sentence, caption or header speaks of machine IDs
    # (the glossary's definition of a unit names them once, to say what a unit replaces).
    glossary = "every statistic that DCASE 2020 data get per machine ID is computed per unit"
    assert glossary in text
    leftovers = re.findall(r".{40}\b(?:IDs?|ID-level|id_\d\d)\b.{20}", text.replace(glossary, ""))
    assert leftovers == []


def test_a_target_domain_with_too_few_normals_in_all_uses_the_source_threshold(params, tmp_path):
    params["features"]["n_jobs"] = params["localization"]["n_jobs"] = 1
    root = write_section_tree(tmp_path / "data", "fan", 2021, n_normal={"source": 6, "target": 6})
    _, summary, _ = localized(params, root, "fan", tmp_path)
    record = summary["calibration_by_domain"]
    assert record["target"] == {
        **record["target"],
        "own": False,
        "n_normal": 12,
        "n_needed": 50,  # 1 / clip_false_region_rate 0.02
    }
    assert record["target"]["threshold_abs_z"] == record["source"]["threshold_abs_z"]
    for key in ("section_00_target", "section_01_target"):
        assert summary["ids"][key]["calibration_domain"] == "source"
        assert 0 <= summary["ids"][key]["clip_false_region_rate"] <= 1  # measured at that threshold
    words = " ".join(calibration_sentences(summary))
    assert "The target domain has 12 normal test clips in all, too few" in words


def test_large_arrays_are_streamed_into_the_npz_and_mapped_back(tmp_path):
    """save_npz streams uncompressed members (no in-memory copy) and gives the bytes the
    buffered writer gave; the log-mels come back memory-mapped, equal to np.load's."""
    import io
    import zipfile

    from analysis.io import _ZIP_EPOCH, map_npz_member, save_npz

    rng = np.random.default_rng(0)
    arrays = {"logmel": rng.standard_normal((7, 16, 20)).astype(np.float32), "n": np.int64(3)}
    save_npz(tmp_path / "streamed.npz", compress=False, **arrays)
    with zipfile.ZipFile(tmp_path / "buffered.npz", "w") as zf:  # the buffered writer
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(arrays[name]), allow_pickle=False)
            zf.writestr(info, buf.getvalue())
    assert (tmp_path / "streamed.npz").read_bytes() == (tmp_path / "buffered.npz").read_bytes()
    mapped = map_npz_member(tmp_path / "streamed.npz", "logmel")
    assert isinstance(mapped, np.memmap)
    assert np.array_equal(mapped, np.load(tmp_path / "streamed.npz")["logmel"])
    assert np.array_equal(mapped[[1, 5]], arrays["logmel"][[1, 5]])


def test_a_borrowing_units_own_normals_are_judged_against_the_source_clips_alone(params):
    """Its own normal clips must not be in the reference that judges them: a band every
    target normal clip shares (a domain shift) stands out against the source clips, and
    would be averaged away if the clips judged themselves."""
    from analysis.localize import borrowed_false_regions

    rng = np.random.default_rng(3)
    source = rng.standard_normal((8, 32, 64))
    own = rng.standard_normal((3, 32, 64))
    own[:, 10:16, 8:56] += 6.0
    by_id = {"section_00_target": (np.concatenate([source, own]), None, [])}
    per_id = {
        "section_00_target": {
            "reference": {"unit": "section_00_source", "n_reference_normal": 8, "n_own_normal": 3}
        }
    }
    loc = {**params["localization"], "min_region_cells": 10}
    borrowed_false_regions(by_id, per_id, {"section_00_target": (3.0, 3.0, None)}, loc)
    assert per_id["section_00_target"]["n_normal_false_regions"] == 3
    assert per_id["section_00_target"]["clip_false_region_rate"] == 1.0


def test_the_synthetic_target_domain_is_a_low_shelf_shift():
    """The synthetic target domain raises the sound below the shelf corner by about its gain
    and leaves the sound far above it alone. First-order Butterworth low-pass (bilinear): at
    100 Hz the copy is at 1 / |1 + j tan(pi 100/sr) / tan(pi 500/sr)| = 0.98, 11 degrees late,
    so the clip gains 20 log10 |1 + 0.995 * 0.98 e^(-11j deg)| = 5.9 dB of the full 6; at 6 kHz
    the copy is at 0.04 and 88 degrees late, adding about 0.01 dB."""
    sr = 16000
    t = np.arange(sr) / sr
    for hz, low_db, high_db in ((100.0, 5.5, 6.05), (6000.0, -0.1, 0.1)):
        tone = 0.1 * np.sin(2 * np.pi * hz * t)
        shifted = shift_to_target(tone, sr)
        steady = slice(sr // 2, None)  # after the filter's start-up
        gain_db = 20 * np.log10(np.std(shifted[steady]) / np.std(tone[steady]))
        assert low_db <= gain_db <= high_db, (hz, gain_db)
    assert TARGET_SHELF_DB == 6.0 and TARGET_SHELF_HZ == 500.0
