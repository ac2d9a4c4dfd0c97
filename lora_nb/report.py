"""The rendered report: execute the analysis notebooks on a runs folder, then render them to
self-contained HTML (code hidden) with nbconvert. `make report` ends here."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import papermill
from nbconvert import HTMLExporter

from .sweep import REPO_ROOT

NOTEBOOKS = REPO_ROOT / "notebooks"


def render_html(notebook: Path, html: Path) -> Path:
    """An executed notebook as one HTML file: outputs only, figures embedded."""
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    html.write_text(body, encoding="utf-8")
    return html


def build_report(runs_dir: str | os.PathLike, figures_dir: str | os.PathLike = REPO_ROOT / "figures",
                 report_dir: str | os.PathLike = REPO_ROOT / "report",
                 subspace: bool = True, force: bool = False) -> list[Path]:
    """Execute ``analysis.ipynb`` (and ``subspace.ipynb``) on `runs_dir`; write figures and
    tables to `figures_dir`, HTML and a copy of every run record to `report_dir`. Returns what
    it wrote: nothing when the report is newer than every record, notebook and module
    (``force`` renders anyway)."""
    runs_dir, figures_dir, report_dir = Path(runs_dir).resolve(), Path(figures_dir).resolve(), Path(report_dir).resolve()
    pages = [("analysis", "index.html", {"subspace_report": "subspace.html" if subspace else None})]
    if subspace:
        pages.append(("subspace", "subspace.html", {}))
    outputs = [report_dir / html for _, html, _ in pages]
    inputs = [*runs_dir.glob("*/record.json"), *(NOTEBOOKS / f"{name}.ipynb" for name, _, _ in pages),
              *Path(__file__).parent.glob("*.py")]
    if not force and all(p.exists() for p in outputs) and inputs and \
            min(p.stat().st_mtime for p in outputs) > max(p.stat().st_mtime for p in inputs):
        return []  # nothing changed since the report was rendered
    executed = runs_dir / "_report"
    executed.mkdir(parents=True, exist_ok=True)
    report_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, html, extra in pages:
        out = executed / f"{name}.ipynb"
        papermill.execute_notebook(
            str(NOTEBOOKS / f"{name}.ipynb"), str(out), cwd=str(REPO_ROOT), progress_bar=False,
            kernel_name="python3",
            parameters={"runs_dir": str(runs_dir), "figures_dir": str(figures_dir), **extra})
        written.append(render_html(out, report_dir / html))
    records = report_dir / "records"
    shutil.rmtree(records, ignore_errors=True)
    records.mkdir()
    for record in sorted(runs_dir.glob("*/record.json")):
        shutil.copy(record, records / f"{record.parent.name}.json")
    written.append(records)
    return written
