"""The report's sentences and data banner, written from small hand-made contexts."""

from analysis.report_text import data_found, findings, type_description

SPF = 512 / 16000  # seconds per frame


def source(per_id: dict, n_train: int, n_skipped: int = 0) -> dict:
    return {"per_id": per_id, "n_train_used": n_train, "n_skipped": n_skipped}


def test_a_type_without_anomalous_clips_says_so_and_not_no_region():
    # As localize writes it: the ID is listed, with no anomalous clips and its status.
    status = "not enough evidence: no anomalous test clips"
    ids = {"id_00": {"n_normal": 8, "n_anomaly": 0, "status": status}}
    loc = {"n_anomaly": 0, "n_regions_found": 0, "pattern": "none found", "ids": ids}
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


def test_each_outcome_without_a_fit_gives_its_own_reason():
    """Not localized (no normal test clips) is not "nothing found", and the negative control's
    reason is that outcome's, not "too few normal clips"; a type whose test clips carry no
    labels says that; counts of one read in the singular."""
    from analysis.report_text import evidence_words

    no_normals = "not enough evidence: 0 normal test clips (needs at least 4)"
    valve = {
        "n_anomaly": 0,
        "ids": {"id_00": {"n_normal": 0, "n_anomaly": 12, "status": no_normals}},
    }
    words = type_description("valve", valve, SPF, 320)
    assert words == "valve: id_00 not localized (0 normal test clips, needs at least 4)."
    cell = evidence_words({"machine_type": "valve", "status": "x"}, [], valve)
    assert "nothing found" not in cell and "too few normal clips" not in cell
    assert cell.endswith("negative control not run (no ID localized)"), cell
    unlabelled = {"n_anomaly": 0, "ids": {}}
    assert "no machine ID or section with labelled test clips" in type_description(
        "T", unlabelled, SPF, 320
    )
    cell = evidence_words({"machine_type": "T", "status": "x"}, [], unlabelled)
    assert (
        cell
        == "no machine ID or section with labelled test clips; negative control not run (no labelled test clips)"
    )
    one = {"ids": {"id_00": {"status": "ok", "id_level": {"negative_control": {"found": False}}}}}
    assert evidence_words({"machine_type": "T", "status": "x"}, [], one) == (
        "too little in its 1 ID; control clean in 1/1 ID"
    )


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


def test_numbers_print_one_minus_sign_and_hyphens_stay():
    from analysis.render import minus

    assert minus("-0.0123 [-0.02, -.5], 10-90, clip-level, id_-1") == (
        "−0.0123 [−0.02, −.5], 10-90, clip-level, id_-1"
    )
    assert minus(-3) == "−3"


def test_the_data_root_is_named_relative_to_the_project_or_by_its_last_part(tmp_path):
    """An absolute data.root inside the project prints relative to it; one outside prints
    only its last part (no one's home folder in a shared PDF)."""
    import os

    from analysis.report import shareable_params

    (tmp_path / "project" / "data" / "dcase").mkdir(parents=True)
    params = {"data": {"root": str(tmp_path / "project/data/dcase")}, "masks": {"presets": {}}}
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path / "project")
        assert shareable_params(params)["data"]["root"] == "data/dcase"
        outside = {**params, "data": {"root": "/home/someone/private/dev_data"}}
        assert shareable_params(outside)["data"]["root"] == "…/dev_data"
    finally:
        os.chdir(cwd)


def test_a_reference_to_what_the_run_did_not_draw_is_named_before_rendering():
    """Either engine would fail (pandoc's filter) or print "?@fig-x" (Quarto): the check finds
    each cited id no figure, table or heading carries; escaped and e-mail-like text is no
    citation."""
    from analysis.render import unresolved_references

    qmd = (
        "See @fig-a, @tbl-b and @sec-c; @fig-regions-vs-fitted is not drawn; \\@fig-x and "
        "me@fig-y.org cite nothing.\n\n![cap](a.png){#fig-a width=100%}\n\n: cap {#tbl-b}\n\n"
        "# Head {#sec-c}\n"
    )
    assert unresolved_references(qmd) == ["fig-regions-vs-fitted"]


def test_the_summary_bullet_gives_the_verdict_page_one_gives_when_training_overrides_it():
    """With the training check on, a switch by closeness that training contradicts must not
    read "switch" in the first page's summary (page 1's table says "disagree"); a type the
    check left alone keeps its closeness verdict. (Broke: the override ignored -> the bullet
    says "switch to fitted for slider" and the test fails.)"""
    from analysis.artifacts import Verdict, VerdictRecord

    def row(t: str, kind: Verdict, candidate: str | None) -> dict:
        v = VerdictRecord(kind, candidate, "current", -0.2, -0.3, -0.1, 0.95, 1.0, 9, 30, "")
        return {"machine_type": t, "status": "ok", "verdict": v.to_json()}

    rows = [row("slider", Verdict.SWITCH, "fitted"), row("fan", Verdict.SWITCH, "fitted")]
    context = {
        "machine_types": ["slider", "fan"],
        "descriptions": {"slider": "slider: x.", "fan": "fan: y."},
        "type_rows": rows,
        "localization": {"slider": {"ids": {}}, "fan": {"ids": {}}},
        "fidelity": [],
        "stable_share": 0.8,
        "n_splits": 10,
        "T": 320,
        "training": {
            "slider": {"verdict": "closeness and training disagree", "changed": True},
            "fan": {"verdict": "switch", "changed": False},
        },
    }
    text = " ".join(findings(context))
    assert "closeness and training disagree (closeness alone: switch to fitted) for slider" in text
    assert "switch to fitted for fan" in text and "switch to fitted for slider" not in text
    del context["training"]  # the check off: closeness alone for both
    assert "switch to fitted for slider, fan" in " ".join(findings(context))
