"""The run folder: one home for its file names, statuses and records.

    <runs-dir>/<run-id>/record.json          the run record (written atomically)
    <runs-dir>/<run-id>/adapter.safetensors  the trained tensors of the best evaluation

Every reader and writer of runs goes through this module; it imports nothing heavy, so the sweep
and the analysis can read records without loading torch or transformers. The committed reference
run keeps only its records, flat, as ``report/records/<run-id>.json`` (plus a few §7 adapters as
``report/adapters/<run-id>.safetensors``): `find_records` reads both layouts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

RECORD_FILE = "record.json"
ADAPTER_FILE = "adapter.safetensors"
COMPLETED, FAILED, RUNNING = "completed", "failed", "running"


def read_record(run_dir: str | os.PathLike) -> dict | None:
    """The record in `run_dir`, or None when there is none or it can't be parsed."""
    try:
        return json.loads((Path(run_dir) / RECORD_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_record(run_dir: str | os.PathLike, record: dict) -> None:
    """Write the record atomically (temporary file, then rename)."""
    run_dir = Path(run_dir)
    tmp = run_dir / (RECORD_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    os.replace(tmp, run_dir / RECORD_FILE)


def is_completed(run_dir: str | os.PathLike) -> bool:
    return (read_record(run_dir) or {}).get("status") == COMPLETED


def adapter_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / ADAPTER_FILE


def find_records(runs_dir: str | os.PathLike) -> Iterator[tuple[str, Path]]:
    """(run id, record path) of every run under `runs_dir`, in run-id order: run folders
    (``<id>/record.json``) and flat records (``<id>.json``, the committed reference run)."""
    runs_dir = Path(runs_dir)
    found = {p.parent.name: p for p in runs_dir.glob(f"*/{RECORD_FILE}")}
    found.update({p.stem: p for p in runs_dir.glob("*.json") if p.stem not in found})
    for run_id in sorted(found):
        yield run_id, found[run_id]


def find_adapter(runs_dir: str | os.PathLike, run_id: str) -> Path | None:
    """The adapter of `run_id`: in its run folder, or beside the flat records
    (``<runs-dir>/../adapters/<run-id>.safetensors``, the committed reference run)."""
    runs_dir = Path(runs_dir)
    for path in (runs_dir / run_id / ADAPTER_FILE, runs_dir.parent / "adapters" / f"{run_id}.safetensors"):
        if path.is_file():
            return path
    return None


REPO_ROOT = Path(__file__).resolve().parent.parent


def repo_path(path: str | os.PathLike) -> Path:
    """`path` resolved against the repository root when relative: notebooks give the same paths
    whether JupyterLab runs them in notebooks/ or papermill runs them from anywhere."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def display_path(path: str | os.PathLike) -> str:
    """`path` relative to the repository root when it lies inside it (for pages and logs that
    must not show the machine's folders), else its name alone."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return path.name


COMMITTED_RECORDS = REPO_ROOT / "report" / "records"


def default_runs_dir(preferred: tuple[str, ...] = ("runs/reference", "runs/cpu")) -> Path:
    """Where the analysis notebooks read runs when given none: the first of `preferred` (relative
    to the repository root) that holds a completed Table 2 or Table 6 run, else the committed
    reference run's records (``report/records``), so that they run on a fresh clone."""
    for folder in preferred:
        path = repo_path(folder)
        for _, record_path in find_records(path):
            record = json.loads(record_path.read_text())
            tags = record.get("config", {}).get("tags", [])
            if record.get("status") == COMPLETED and {"table2", "table6"} & set(tags):
                return path
    return COMMITTED_RECORDS
