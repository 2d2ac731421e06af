"""The params checks that need librosa, matplotlib or the data folder.

``python -m analysis check-params`` (:mod:`analysis.check_params`) runs them, and it is
the pipeline's first stage, so a bad colormap, empty mel filters or a missing machine-type
folder stop ``dvc repro`` before any work. Every stage also runs
:func:`analysis.params.validate_params`, which imports neither library; the
stages that use one of these things check it again at their start, for a stage
run by hand. Nothing here imports the mask strategies, so the stages that reuse a check
(extract, figures) do not depend on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from analysis.dcase import dangling_links
from analysis.mel import MelGeometry, empty_mel_filters
from analysis.params import ParamsError, require

SYNTHETIC_ROOT = "data/synthetic"  # the synthesize stage's output: made by the pipeline itself


def check_mel_filters(geometry: MelGeometry) -> None:
    """Stop on a mel filter bank with empty filters (librosa only warns).

    With many mel bands, a small ``n_fft`` or a narrow ``fmin``-``fmax`` range, the
    lowest triangles fall between two FFT bins and are all zero: those mel rows
    would be constant and every statistic on them meaningless.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa's "Empty filters detected": we say it better
        empty = empty_mel_filters(geometry.mel_basis)
    require(
        not empty,
        "features.n_mels",
        f"{len(empty)} of {geometry.n_mels} mel filters are empty (bins "
        f"{', '.join(map(str, empty[:8]))}{', ...' if len(empty) > 8 else ''}) with n_fft = "
        f"{geometry.n_fft}, fmin = {geometry.fmin}, fmax = {geometry.fmax}: lower "
        "n_mels, raise n_fft or widen fmin..fmax",
    )


def check_colormaps(figures: Mapping[str, Any]) -> None:
    """Stop on a colormap name matplotlib does not know (else figures fails after the slow stages)."""
    import matplotlib

    known = set(matplotlib.colormaps)
    for key in ("cmap_spectrogram", "cmap_deviation"):
        name = figures[key]
        if name not in known:
            close = sorted(k for k in known if k.lower() == name.lower() or k.startswith(name[:4]))
            hint = f" (did you mean {', '.join(close[:5])}?)" if close else ""
            raise ParamsError(f"figures.{key}: {name!r} is not a matplotlib colormap{hint}")


def check_data_root(data: Mapping[str, Any]) -> None:
    """Stop when ``data.root`` lacks a listed machine type's folders.

    The synthetic default (``data/synthetic``) is made by the pipeline's first
    stage, so it is not checked here.
    """
    root = Path(data["root"])
    if root.as_posix().rstrip("/") == SYNTHETIC_ROOT:
        return
    require(root.is_dir(), "data.root", f"{root}: no such folder")
    for machine_type in data["machine_types"]:
        type_dir = root / machine_type
        require(
            (type_dir / "train").is_dir(),
            "data.machine_types",
            f"{machine_type!r} is listed but {type_dir / 'train'} is not a folder "
            f"(expected {root}/{machine_type}/{{train,test}}/)",
        )
        require(
            any((type_dir / f).is_dir() for f in ("test", "source_test", "target_test")),
            "data.machine_types",
            f"{machine_type!r} is listed but {type_dir} has no test/ folder "
            f"(nor DCASE 2021's source_test/, target_test/)",
        )
        # DVC hashes every file of ROOT/TYPE (the extract stage's dependency) and stops on a
        # link to nothing; extract itself would list it as skipped, but never gets to run.
        links = dangling_links(root, machine_type)
        require(
            not links,
            "data.root",
            f"{len(links)} link(s) under {root / machine_type} point at files that do not exist "
            f"({', '.join(links[:5])}{', ...' if len(links) > 5 else ''}); DVC cannot hash them: "
            "remove them or restore their targets",
        )
