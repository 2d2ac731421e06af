"""The report's sentences and data banner, written from small hand-made contexts."""

from analysis.report_text import data_found, findings, type_description

SPF = 512 / 16000  # seconds per frame


def source(per_id: dict, n_train: int, n_skipped: int = 0) -> dict:
    return {"per_id": per_id, "n_train_used": n_train, "n_skipped": n_skipped}


def test_a_type_without_anomalous_clips_says_so_and_not_no_region():
    loc = {"n_anomaly": 0, "n_regions_found": 0, "pattern": "none found", "ids": {}}
    context = {
        "machine_types": ["pump"],
        "localization": {"pump": loc},
        "descriptions": {"pump": type_description("pump", loc, SPF, 320)},
        "type_rows": [{"machine_type": "pump", "status": "not enough evidence"}],
        "fidelity": [],
        "ci_level": 0.95,
    }
    text = " ".join(findings(context))
    assert "pump: no labelled anomalous test clips" in text
    assert "standing out" not in text


def test_data_found_counts_what_extract_used():
    sources = {
        "fan": source({"id_00": {"test_normal": 3, "test_anomaly": 2}}, n_train=10, n_skipped=1),
        "valve": source(
            {
                "id_00": {"test_normal": 1, "test_anomaly": 0},
                "id_02": {"test_normal": 4, "test_anomaly": 5},
            },
            n_train=7,
        ),
    }
    line = data_found(sources)
    assert line == (
        "2 machine types (fan, valve), 3 machine IDs, 17 train clips, 8 normal and 7 anomalous "
        "test clips used, 1 file skipped"
    )


def test_a_newline_in_a_file_name_stays_in_its_table_cell():
    from analysis.render import md_escape

    cell = md_escape("fan/test/normal\nid_00_00000001.wav")
    assert "\n" not in cell and "normal\\\\nid" in cell  # shown as \n, escaped for Markdown


def test_bands_are_named_in_hz_and_khz():
    from analysis.report_text import hz_words

    assert hz_words([771.0, 829.0]) == "771–829 Hz"
    assert hz_words([1100.0, 1290.0]) == "1.1–1.3 kHz"
    assert hz_words([949.0, 1100.0]) == "949 Hz–1.1 kHz"
    assert hz_words([1210.0, 1230.0]) == "1.2 kHz"
    assert hz_words(None) == ""
