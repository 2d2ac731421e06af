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
        (lambda p: p["masks"]["presets"]["perlin"].pop("kind"), "masks.presets.perlin.kind"),
        (lambda p: p["data"].update(machine_types=["fan", "fan"]), "data.machine_types"),
        (lambda p: p["data"].update(machine_types=["toaster"]), "data.machine_types[0]"),
        (lambda p: p["report"].update(engine="word"), "report.engine"),
        (lambda p: p.update(extra={}), "extra"),
        (lambda p: p["recommend"].update(user_setting="mine"), "recommend.user_setting"),
        (lambda p: p["recommend"].update(user_setting=""), "recommend.user_setting"),
        (lambda p: p["recommend"].update(n_splits=0), "recommend.n_splits"),
        (lambda p: p["recommend"].update(n_splits=2.5), "recommend.n_splits"),
        (lambda p: p["recommend"].pop("user_setting"), "recommend.user_setting"),
        (
            lambda p: p["masks"]["presets"].update(fitted={"kind": "audio_specific"}),
            "masks.presets.fitted",  # the verdict's name for the fitted setting
        ),
    ],
)
def test_bad_values_name_the_key(edit, key):
    p = copy.deepcopy(raw())
    edit(p)
    with pytest.raises(ParamsError) as err:
        validate_params(p)
    assert str(err.value).startswith(key + ":"), str(err.value)


@pytest.mark.parametrize(
    "edit, key",
    [
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
        (
            lambda p: p["masks"]["presets"]["perlin"].update(kind="mixture"),
            "masks.presets.perlin.kind",
        ),
        (
            lambda p: p["masks"]["presets"]["training_today"].update(max_segmnts=3),
            "masks.presets.training_today.max_segmnts",
        ),
        (
            lambda p: p["masks"]["presets"]["current"].update(fmin_hz=100.0),
            "masks.presets.current.fmin_hz",
        ),
        (
            lambda p: p["masks"].update(resize_methods=["nearest", "bicubic"]),
            "masks.resize_methods[1]",
        ),
    ],
)
def test_bad_mask_settings_name_the_key(edit, key):
    """The presets follow the strategies' rules: analysis.strategies.presets checks them (in
    check-params and the masks stage), naming the key as params.py does."""
    from analysis.strategies.presets import check_masks_params

    p = copy.deepcopy(raw())
    edit(p)
    params = validate_params(p)  # the file's shape is fine
    with pytest.raises(ParamsError) as err:
        check_masks_params(params)
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

    git = {"commit": "0123456789abcdef", "commit_epoch": "1577970000"}  # 2020-01-02 13:00 UTC
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # 2023-11-14 22:13:20 UTC
    assert report_date(git) == "Date (SOURCE_DATE_EPOCH): 2023-11-14"
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert report_date(git) == "Date of commit 0123456789ab: 2020-01-02"
    assert report_date({"commit": "unknown"}).startswith("Undated (not a git checkout")


def check_params_cli(tmp_path, p: dict | str, cwd=None) -> subprocess.CompletedProcess:
    path = tmp_path / "params.yaml"
    path.write_text(p if isinstance(p, str) else yaml.safe_dump(p, sort_keys=False))
    return subprocess.run(
        [sys.executable, "-m", "analysis", "--params", str(path), "check-params"],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize(
    "edit, key, words",
    [
        (
            lambda p: p["figures"].update(cmap_deviation="RdBu_rr"),
            "figures.cmap_deviation",
            "RdBu_r",
        ),
        (
            lambda p: p["figures"].update(cmap_spectrogram="Magma"),
            "figures.cmap_spectrogram",
            "magma",
        ),
        # 256 HTK bands below 8 kHz with a 256-point FFT: the lowest triangles miss every FFT bin.
        (
            lambda p: p["features"].update(n_mels=256, n_fft=256, hop_length=128),
            "features.n_mels",
            "empty",
        ),
        (lambda p: p["features"].update(fmin=100.0, fmax=400.0), "features.n_mels", "empty"),
        (
            lambda p: p["masks"]["presets"]["perlin"].update(max_threshold=1.0),
            "masks.presets.perlin.max_threshold",
            "[-1, 1)",
        ),
        (lambda p: p["downstream"].update(baseline_epochs=0), "downstream.baseline_epochs", ">= 1"),
        (lambda p: p["downstream"].update(path_points=1), "downstream.path_points", ">= 2"),
        (
            lambda p: p["downstream"].update(synthetic_train_clips_per_id=-1),
            "downstream.synthetic_train_clips_per_id",
            ">= 0",
        ),
    ],
)
def test_check_params_catches_what_used_to_fail_late(tmp_path, edit, key, words):
    p = raw()
    edit(p)
    result = check_params_cli(tmp_path, p)
    assert result.returncode == 2, result.stdout + result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert f": {key}:" in message and words in message, message
    assert "Traceback" not in result.stderr


def test_the_project_mel_setting_has_no_empty_filter():
    from analysis.checks import check_mel_filters
    from analysis.mel import MelGeometry

    check_mel_filters(MelGeometry.from_params(load_params(ROOT / "params.yaml")))  # no raise


def test_a_machine_type_without_a_folder_under_a_real_root_stops_check_params(tmp_path):
    data = tmp_path / "dcase"
    for split in ("train", "test"):
        (data / "fan" / split).mkdir(parents=True)
    p = raw()
    p["data"].update(root=str(data), machine_types=["fan", "pump"])
    result = check_params_cli(tmp_path, p)
    assert result.returncode == 2
    assert "data.machine_types: 'pump' is listed but" in result.stderr
    p["data"]["machine_types"] = ["fan"]
    assert check_params_cli(tmp_path, p).returncode == 0
    p["data"]["root"] = str(tmp_path / "nowhere")
    result = check_params_cli(tmp_path, p)
    assert result.returncode == 2 and "data.root:" in result.stderr


def test_a_key_given_twice_is_named_with_its_lines(tmp_path):
    text = (ROOT / "params.yaml").read_text()
    # The features block pasted a second time, as happens when merging two edits.
    start = text.index("\nfeatures:")
    end = text.index("\n", text.index("\n", start + 1) + 1)
    doubled = text + text[start:end] + "\n"
    result = check_params_cli(tmp_path, doubled)
    assert result.returncode == 2
    assert "features: given twice in one mapping (lines" in result.stderr, result.stderr
    assert "missing" not in result.stderr


def test_params_pointing_at_a_folder_is_a_clear_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "analysis", "--params", str(tmp_path), "check-params"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "is a folder; --params takes a YAML file" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_write_that_fails_gives_a_message_and_keeps_the_old_output(tmp_path):
    """File too large (RLIMIT_FSIZE 0 makes every write fail with EFBIG, as a full disk would)."""
    import resource

    stamp = tmp_path / "stamp.txt"
    stamp.write_text("an earlier result\n")

    def no_room() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    result = subprocess.run(
        [sys.executable, "-m", "analysis", "check-params", "--stamp", str(stamp)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        preexec_fn=no_room,
    )
    assert result.returncode == 4, result.stderr
    assert "error: check-params: cannot write" in result.stderr
    assert "File too large" in result.stderr and "Traceback" not in result.stderr
    assert stamp.read_text() == "an earlier result\n"
    assert not list(tmp_path.glob(".*.tmp")), "no temp file left beside the output"


def test_an_unwritable_output_stops_a_stage_before_any_work(tmp_path):
    """With no room to write, extract stops before reading a clip (not after all of them)."""
    import resource

    from tests.conftest import write_tree

    root = write_tree(tmp_path / "data", n_train=2, n_normal=2, n_anomaly=2)
    p = raw()
    p["features"]["n_jobs"] = 1  # no process pool: its semaphores would be the first write
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(p, sort_keys=False))

    def no_room() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    result = subprocess.run(
        [sys.executable, "-m", "analysis", "--params", str(params), "extract", "fan"]
        + ["--data-root", str(root), "--out", str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        preexec_fn=no_room,
    )
    assert result.returncode == 4, result.stderr
    assert "cannot write" in result.stderr and "File too large" in result.stderr
    assert "clips:" not in result.stderr  # the clip counter never ran
    assert not (tmp_path / "out").exists()


def test_yaml_merge_keys_and_exponent_floats_read_as_yaml_readers_do(tmp_path):
    """`<<: *anchor` merges a mapping (keys given beside it override), and 2e-2 is a number."""
    text = (ROOT / "params.yaml").read_text()
    text = text.replace("  clip_false_region_rate: 0.02", "  clip_false_region_rate: 4e-2")
    text = text.replace(
        "    proposed:\n      kind: audio_specific\n      min_band_fraction: 0.05\n",
        "    proposed:\n      <<: *current\n      min_band_fraction: 0.05\n",
    )
    text = text.replace("    current:\n", "    current: &current\n")
    path = tmp_path / "params.yaml"
    path.write_text(text)
    params = load_params(path)
    assert params["localization"]["clip_false_region_rate"] == 0.04
    proposed = params["masks"]["presets"]["proposed"]
    assert proposed["kind"] == "audio_specific"  # from the anchor
    assert proposed["max_segments"] == 20  # given beside the merge key: overrides the anchor's 160
    result = check_params_cli(tmp_path, text)
    assert result.returncode == 0, result.stderr


def test_messages_name_the_file_once(tmp_path):
    missing = subprocess.run(
        [sys.executable, "-m", "analysis", "--params", str(tmp_path / "nope.yaml"), "check-params"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    broken = check_params_cli(tmp_path, "a: [1, 2\n")
    for result, words in ((missing, "not found at"), (broken, "not valid YAML")):
        assert result.returncode == 2 and words in result.stderr, result.stderr
        line = result.stderr.strip().splitlines()[0]
        _, name, rest = line.split(": ", 2)
        assert name in ("nope.yaml", "params.yaml"), line
        # "error: params.yaml: params.yaml: ..." (the name twice in front) was the old message.
        assert not rest.startswith((name, str(tmp_path))), line


@pytest.mark.parametrize("key", ["title", "author"])
def test_title_and_author_are_capped(tmp_path, key):
    p = raw()
    p["report"][key] = "x" * 201
    result = check_params_cli(tmp_path, p)
    assert result.returncode == 2
    assert f"report.{key}: 201 characters; at most 200" in result.stderr
    p["report"][key] = "x" * 200
    assert check_params_cli(tmp_path, p).returncode == 0
