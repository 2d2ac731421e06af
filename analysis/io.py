"""Deterministic, atomic output files and terminal progress.

Every stage output goes through these helpers so that (a) an interrupted run
never leaves a half-written file that DVC could mistake for a result, and
(b) the same inputs give byte-identical files (no timestamps inside them),
which lets DVC skip downstream stages when an output did not change.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


SCRATCH_DIR = ".tmp"  # under the project root: temp files of running stages, never a DVC path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - alive, owned by someone else
        return True
    return True


def scratch_root() -> Path:
    """The project's scratch folder: ``.tmp/`` in the working directory (DVC runs stages there)."""
    return Path.cwd() / SCRATCH_DIR


def _scratch_for(target: Path) -> Path:
    """Where the temp file of ``target`` is made before it is renamed into place."""
    return _scratch_in(target.parent)


def _scratch_in(folder: Path) -> Path:
    """Where temp files of outputs in ``folder`` are made.

    Outputs inside the project get their temp files in ``.tmp/<pid>/``, outside
    every DVC output and dependency, so a run killed with SIGKILL leaves nothing
    inside ``build/``, ``data/`` or ``report/`` that DVC would hash. Outputs
    elsewhere (``--out /somewhere``), or on another file system (rename must not
    cross one), get their temp file beside them.
    """
    parent = folder.resolve()
    root = scratch_root().parent.resolve()
    if parent.is_relative_to(root) and parent.stat().st_dev == root.stat().st_dev:
        scratch = root / SCRATCH_DIR / str(os.getpid())
        scratch.mkdir(parents=True, exist_ok=True)
        return scratch
    return parent


def probe_writable(target: str | Path) -> None:
    """Write and remove one byte where ``target``'s temp files will go.

    A read-only file system or a full quota then stops the stage before any work
    instead of after it (raises the OSError; the CLI turns it into a message).
    """
    target = Path(target)
    folder = target if target.is_dir() else target.parent
    while not folder.exists():
        folder = folder.parent
    fd, name = tempfile.mkstemp(prefix=".probe.", suffix=".tmp", dir=_scratch_in(folder))
    try:
        os.write(fd, b"\0")
    finally:
        os.close(fd)
        os.unlink(name)


def clean_stale_scratch(root: Path | None = None) -> list[Path]:
    """Remove the scratch folders of processes that no longer run (killed stages).

    Returns what was removed. Folders of live processes (a stage running beside
    this one) are left alone.
    """
    root = root or scratch_root()
    removed = []
    if not root.is_dir():
        return removed
    for entry in sorted(root.iterdir()):
        if entry.name.isdigit() and _pid_alive(int(entry.name)):
            continue
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(True)
        removed.append(entry)
    with contextlib.suppress(OSError):
        root.rmdir()  # only if empty
    return removed


def clean_own_scratch() -> None:
    """Remove this process's scratch folder (at the end of a stage)."""
    mine = scratch_root() / str(os.getpid())
    shutil.rmtree(mine, ignore_errors=True)
    with contextlib.suppress(OSError):
        mine.parent.rmdir()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path (in the scratch folder); rename it to ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=_scratch_for(path))
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory (in the scratch folder) that replaces ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = _scratch_for(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=scratch))
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=scratch))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if path.exists():
            path.rename(old / path.name)
        tmp.rename(path)
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        f = float(value)
        return round(f, 6) if np.isfinite(f) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def to_json(value: Any) -> str:
    """JSON with sorted keys, floats rounded to 6 digits, NaN as null."""
    return json.dumps(_jsonable(value), indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_json(path: str | Path, value: Any) -> None:
    write_text(path, to_json(value))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def format_cell(value: Any) -> str:
    if isinstance(value, float | np.floating):
        f = float(value)
        return "" if not np.isfinite(f) else f"{f:.6g}"
    return "" if value is None else str(value)


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Write ``rows`` (dicts) with a fixed column order; missing cells stay empty."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([format_cell(row.get(c)) for c in columns])
    write_text(path, buf.getvalue())


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def save_npz(path: str | Path, compress: bool = True, **arrays: Any) -> None:
    """Like ``np.savez_compressed`` (``np.savez`` if not ``compress``), byte-identical for
    identical arrays.

    numpy stamps each zip member with the current time; here every member gets
    a fixed date so the file's hash depends on its contents only. Large float
    arrays of noisy values (normalized log-mels) shrink by a few percent only,
    at about 2 s per 50 MB: those are stored uncompressed.
    """
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            array = np.asanyarray(arrays[name])
            if not compress:  # streamed into the zip: no copy of a large array in memory
                with zf.open(info, "w", force_zip64=array.nbytes > 2**30) as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)
                continue
            buf = io.BytesIO()
            np.lib.format.write_array(buf, array, allow_pickle=False)
            zf.writestr(info, buf.getvalue(), compresslevel=6)


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def map_npz_member(path: str | Path, name: str) -> np.ndarray | None:
    """One array of an npz file, memory-mapped copy-on-write where it is stored uncompressed
    (as :func:`save_npz` stores large ones), else None. Selecting rows of it reads only those
    rows from disk, so a stage never holds the whole array when it needs a part."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        name_len, extra_len = (
            int.from_bytes(local[26:28], "little"),
            int.from_bytes(local[28:30], "little"),
        )
        fh.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(fh)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(fh)
        offset = fh.tell()
    if dtype.hasobject or 0 in shape:
        return None
    order = "F" if fortran else "C"
    return np.memmap(path, dtype=dtype, mode="c", shape=shape, offset=offset, order=order)


class Progress:
    """Counts work items on a terminal; prints only a closing line when piped.

    Parameters
    ----------
    label
        What is counted, for example ``"extract fan: clips"``.
    total
        The number of items expected.
    """

    def __init__(self, label: str, total: int, stream=None) -> None:
        self.label, self.total, self.done = label, total, 0
        self.stream = stream or sys.stderr
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last = 0.0
        self._start = time.monotonic()

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.live and (now - self._last > 0.1 or self.done >= self.total):
            self._last = now
            self.stream.write(f"\r{self.label}: {self.done}/{self.total}")
            self.stream.flush()

    def close(self, summary: str = "") -> None:
        elapsed = time.monotonic() - self._start
        end = "\r" if self.live else ""
        tail = f" ({summary})" if summary else ""
        self.stream.write(f"{end}{self.label}: {self.done}/{self.total} in {elapsed:.1f}s{tail}\n")
        self.stream.flush()


def log(message: str) -> None:
    """One line of stage output on stderr (kept short; DVC shows it)."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def iter_chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
