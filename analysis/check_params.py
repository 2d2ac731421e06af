"""Stage ``check-params``: every check of ``params.yaml`` before any stage works.

The pipeline's first stage (every other stage waits for it): the checks that need librosa,
matplotlib or the data folder (:mod:`analysis.checks`), the mask strategies' rules for
``masks.presets`` and ``masks.resize_methods`` (:mod:`analysis.strategies.presets`), and one
trial of every ``kind: python`` preset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from analysis.checks import check_colormaps, check_data_root, check_mel_filters
from analysis.mel import MelGeometry
from analysis.params import ParamsError
from analysis.strategies.presets import check_masks_params

PRESET_LOG = Path("build/logs/python_presets.log")


def check_python_presets(params: dict[str, Any], log_path: Path = PRESET_LOG) -> None:
    """Import, build and call once every ``kind: python`` preset (else ``masks`` fails later).

    A failure stops with a message naming the preset; its traceback goes to ``log_path``
    (named in the message), not to the terminal.
    """
    import traceback

    from analysis.strategies.errors import StrategyError
    from analysis.strategies.imported import ImportedStrategy

    shape = (params["features"]["n_mels"], params["features"]["target_T"])
    for name, preset in params["masks"]["presets"].items():
        if preset["kind"] != "python":
            continue
        try:
            strategy = ImportedStrategy(
                preset["target"], shape, preset.get("kwargs"), preset.get("path"), name=name
            )
            strategy.full_size(1)
        except StrategyError as err:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_text(traceback.format_exc(), encoding="utf-8")
            raise ParamsError(f"masks.presets.{name}: {err} (traceback in {log_path})") from None


def check_all(params: dict[str, Any]) -> None:
    """Every check beyond :func:`analysis.params.validate_params` (which every stage runs).

    ``python -m analysis check-params`` runs them; so does the pipeline's first
    stage, so a bad colormap, mel setting or mask preset stops ``dvc repro`` before any work.
    """
    check_masks_params(params)
    check_data_root(params["data"])
    check_mel_filters(MelGeometry.from_params(params))
    check_colormaps(params["figures"])
    check_python_presets(params)
