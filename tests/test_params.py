import copy
import subprocess
import sys

import pytest
import yaml

from analysis.params import ParamsError, load_params, validate_params
from tests.conftest import ROOT


def raw():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_project_params_are_valid():
    params = load_params(ROOT / "params.yaml")
    assert params["features"]["n_mels"] == 128
    assert set(params["masks"]["presets"]) >= {
        "current",
        "proposed",
        "narrow_band_few_segments",
        "perlin",
    }


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda p: p["features"].update(n_mel=64), "features.n_mel"),  # unknown key
        (lambda p: p["features"].pop("hop_length"), "features.hop_length"),  # missing
        (lambda p: p["features"].update(n_mels="many"), "features.n_mels"),  # wrong type
        (lambda p: p["features"].update(fmax=9000.0), "features.fmax"),  # above sr/2
        (
            lambda p: p["synthetic"].update(strength=0.0),
            "synthetic.strength",
        ),  # min > max
        (
            lambda p: p["masks"]["presets"]["current"].update(min_segments=200),
            "masks.presets.current.min_segments",
        ),
        (
            lambda p: p["masks"]["presets"]["proposed"].update(max_band_fraction=1.5),
            "masks.presets.proposed.max_band_fraction",
        ),
        (
            lambda p: p["masks"]["presets"]["proposed"].update(max_seg_len=999),
            "masks.presets.proposed.max_seg_len",
        ),
        (
            lambda p: p["masks"]["presets"]["perlin"].update(kind="blobs"),
            "masks.presets.perlin.kind",
        ),
        (lambda p: p["data"].update(machine_types=["fan", "fan"]), "data.machine_types"),
        (lambda p: p["data"].update(machine_types=["toaster"]), "data.machine_types[0]"),
        (lambda p: p["report"].update(engine="word"), "report.engine"),
        (lambda p: p.update(extra={}), "extra"),
    ],
)
def test_bad_values_name_the_key(edit, key):
    p = copy.deepcopy(raw())
    edit(p)
    with pytest.raises(ParamsError) as err:
        validate_params(p)
    assert str(err.value).startswith(key + ":"), str(err.value)


def test_cli_stops_before_any_work(tmp_path):
    p = raw()
    p["features"]["n_fft"] = "1024"
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(p))
    out = tmp_path / "never"
    result = subprocess.run(
        [sys.executable, "-m", "analysis", "--params", str(bad), "synthesize", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "features.n_fft" in result.stderr
    assert not out.exists()


def test_cli_help_lists_every_stage():
    result = subprocess.run(
        [sys.executable, "-m", "analysis", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    for stage in (
        "synthesize",
        "extract",
        "localize",
        "masks",
        "recommend",
        "figures",
        "report",
        "watch",
    ):
        assert stage in result.stdout


def test_invalid_yaml(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("features: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_report_date_is_reproducible(monkeypatch):
    from analysis.report import report_date

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # 2023-11-14 22:13:20 UTC
    assert report_date({"commit_date": "2020-01-02"}) == "2023-11-14"
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert report_date({"commit_date": "2020-01-02"}) == "2020-01-02"
