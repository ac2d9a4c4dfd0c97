"""The rendered report: execute the report notebooks on a runs folder, render them to
self-contained HTML (code hidden) with nbconvert, and publish the records and the §7 adapters
beside them. `make report` ends here.

What a page must not show, and how it is kept off (`page_problems` checks the result):

- stderr, warnings, progress bars: every report kernel (`execute_page`) first runs
  `KERNEL_SETUP`: tqdm.auto settles on plain tqdm, switched off by TQDM_DISABLE (no widget bar,
  no "IProgress not found" warning), library logging quiet, then `setup_kernel`;
- the rendering machine's folders: notebook parameters are repository-relative paths, and any
  absolute path under the checkout left in an output is made relative (`rundir.display_path`);
- "Notebook" as the title, images without alt text, linked images: the title is the notebook's
  first heading, every figure is an embedded data URI whose alt text is the figure's title;
- the pandas row index and raw floats: the kernels show a DataFrame through `frame_html`.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import warnings
from html import escape
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd

from .checkpoint import publish_lora_tensors, same_adapter
from .notebook_run import execute_notebook
from .rundir import ARCHIVED_SUBSPACE_RUNS, REPO_ROOT, display_path, find_adapter, find_records, is_completed
from .subspace import has_subspace_runs

NOTEBOOKS = REPO_ROOT / "notebooks"
SUBSPACE_RANKS = (1, 2, 4, 8, 64)  # the Wq,Wv ranks whose adapters the report keeps (§7)
PATH_FIELDS = ("output_dir", "glue_dir", "init_adapter")  # config fields that hold paths
DEFAULT_ALT = "No description has been provided for this image"  # nbconvert's filler
# Progress bars off (tqdm reads TQDM_* when it is imported), library chatter off.
QUIET_ENV = {"TQDM_DISABLE": "1",
             "TRANSFORMERS_VERBOSITY": "error", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
# What the report kernels run first, before anything imports tqdm (lora_nb's own imports do):
# the environment; then tqdm.auto imported while the kernel's shell module is hidden, so that
# it settles on plain tqdm (which TQDM_DISABLE turns off; the notebook variant ignores it and
# draws widgets, or warns "IProgress not found" without ipywidgets); then `setup_kernel`.
KERNEL_SETUP = (f"import os, sys, warnings; [os.environ.setdefault(k, v) for k, v in {QUIET_ENV!r}.items()]; "
                "warnings.filterwarnings('ignore', message='IProgress not found'); "
                "_shell = sys.modules.pop('ipykernel.zmqshell', None); import tqdm.auto; "
                "sys.modules.update({'ipykernel.zmqshell': _shell} if _shell else {}); del _shell; "
                "from lora_nb.report import setup_kernel; setup_kernel()")


# --------------------------------------------------------------------------- what pages show


def device_label(device: str | None) -> str:
    """A record's device ("cpu: cpu", "cpu: x86_64", "cuda: NVIDIA H100 80GB HBM3") as a page
    shows it: "CPU", "CPU (x86_64)", "NVIDIA H100 80GB HBM3"."""
    if not device:
        return ""
    kind, _, name = str(device).partition(":")
    kind, name = kind.strip(), name.strip()
    if kind == "cpu":
        return "CPU" if name in ("", "cpu") else f"CPU ({name})"
    return name or kind.upper()


def _decimals(values: pd.Series) -> int | None:
    """Decimals for a float column: by its largest magnitude, three significant digits at most;
    None when every value is a whole number."""
    finite = values[np.isfinite(values)]
    if finite.empty or (finite == finite.round()).all():
        return None
    top = float(finite.abs().max())
    if top >= 10:
        return 0 if top >= 1000 else 1
    if top >= 1:
        return 2
    return min(6, 2 - math.floor(math.log10(top))) if top > 0 else 2


def format_frame(df: pd.DataFrame) -> pd.DataFrame:
    """`df` as strings for a page: no row index (an unnamed integer index is dropped, any other
    becomes columns), floats rounded column by column (`_decimals`: three significant digits for
    the column's largest value, at most two decimals from 1 up, one from 10 up, none from 1000
    up), whole numbers without decimals, thousands separated from 10,000, NaN blank."""
    out = df.copy()
    unnamed = all(name is None for name in out.index.names)
    if unnamed and pd.api.types.is_integer_dtype(out.index):
        out = out.reset_index(drop=True)  # a default index, or what filtering left of one
    else:
        out = out.reset_index()  # a meaningful index (labels, group keys) becomes columns
    if isinstance(out.columns, pd.MultiIndex):
        out.columns = [" ".join(str(c) for c in col if str(c)) for col in out.columns]
    for col in out.columns:
        s = out[col]
        if pd.api.types.is_bool_dtype(s):
            continue
        if pd.api.types.is_integer_dtype(s):
            out[col] = s.map(lambda v: f"{v:,}" if abs(v) >= 10_000 else str(v))
        elif pd.api.types.is_float_dtype(s):
            decimals = _decimals(s)
            out[col] = s.map(lambda v, d=decimals: "" if pd.isna(v) else
                             (f"{v:,.0f}" if abs(v) >= 10_000 else f"{v:.0f}") if d is None else
                             f"{v:,.{d}f}" if abs(v) >= 10_000 else f"{v:.{d}f}")
        else:
            out[col] = s.map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v)
    return out


def frame_html(df: pd.DataFrame) -> str:
    """A DataFrame as an HTML table without the row index, values rounded (`format_frame`)."""
    return format_frame(df).to_html(index=False, border=0, na_rep="")


class Table:
    """A DataFrame to `display` on a page: no index, rounded (`frame_html`); the report kernels
    show every DataFrame this way, this wrapper does it in any notebook."""

    def __init__(self, df: pd.DataFrame):
        self.df = df

    def _repr_html_(self) -> str:
        return frame_html(self.df)

    def __repr__(self) -> str:
        return format_frame(self.df).to_string(index=False)


def table(df: pd.DataFrame) -> Table:
    return Table(df)


def figure_title(fig) -> str:
    """A figure's title (its suptitle, else its axes' titles joined): the alt text of its image."""
    sup = getattr(fig, "_suptitle", None)
    if sup is not None and sup.get_text().strip():
        return sup.get_text().strip()
    titles = [ax.get_title().strip() for ax in fig.axes if ax.get_title().strip()]
    return "; ".join(dict.fromkeys(titles))


def setup_kernel() -> None:
    """Make a notebook kernel render report pages: no progress bars or tqdm notebook warning,
    DataFrames without their index and rounded (`frame_html`), and every matplotlib figure's
    title as the alt text of its image (PNG output metadata ``alt``). `execute_page` runs
    it first in every report kernel; a notebook may call it itself."""
    warnings.filterwarnings("ignore", message="IProgress not found")
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    formatters = shell.display_formatter.formatters
    formatters["text/html"].for_type(pd.DataFrame, frame_html)
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    plt.close(plt.figure())  # loads the inline backend, which registers its PNG formatter
    png = formatters["image/png"]
    try:
        previous = png.lookup_by_type(Figure)
    except KeyError:
        return
    if getattr(previous, "_lora_nb_alt", False):
        return

    def with_alt(fig):
        data = previous(fig)
        title = figure_title(fig)
        return (data, {"alt": title}) if data is not None and title else data

    with_alt._lora_nb_alt = True
    png.for_type(Figure, with_alt)


# --------------------------------------------------------------------------- notebooks → pages


def _relative(text: str) -> str:
    """Absolute paths under the checkout made repository-relative."""
    root = str(REPO_ROOT)
    return text.replace(root + os.sep, "").replace(root, ".")


def _plain(markdown: str) -> str:
    return re.sub(r"[*_`]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", markdown).strip()


def prepare_page(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Ready an executed notebook for its page, in place: the title is its first heading;
    every PNG becomes an embedded <img> whose alt text is the figure's title (from the output's
    metadata; else the section it is in); absolute paths under the checkout become relative;
    papermill's parameters cell, whose id is random, gets a fixed one (a re-render from the same
    records leaves the page byte-identical)."""
    heading = ""
    for cell in nb.cells:
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            cell["id"] = "injected-parameters"
        if cell.cell_type == "markdown":
            found = re.search(r"^#{1,6}\s+(.+)$", cell.source, re.MULTILINE)
            if found:
                heading = _plain(found.group(1))
                nb.metadata.setdefault("title", heading)
            continue
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                output["text"] = _relative(output.get("text", ""))
                continue
            data = output.get("data", {})
            for mime in ("text/plain", "text/html", "text/markdown"):
                if isinstance(data.get(mime), str):
                    data[mime] = _relative(data[mime])
            if "image/png" in data:
                meta = output.get("metadata", {})
                alt = (meta.get("image/png", {}) or {}).get("alt") or meta.get("alt") or \
                    (f"Figure: {heading}" if heading else "Figure")
                png = "".join(data["image/png"]).replace("\n", "")
                output["data"] = {"text/html": f'<img src="data:image/png;base64,{png}" alt="{escape(alt)}"/>'}
                output["metadata"] = {}
    return nb


_STDERR_STYLE = re.compile(r"\.jp-RenderedText\[data-mime-type='application/vnd\.jupyter\.stderr'\]\s*\{[^}]*\}\s*")


def render_html(notebook: Path, html: Path) -> Path:
    """An executed notebook as one HTML file (`prepare_page`): outputs only, figures embedded."""
    from nbconvert import HTMLExporter

    nb = prepare_page(nbformat.read(notebook, as_version=4))
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb)
    # The page holds no stderr output (`prepare_page` drops it), so the template's style rule for
    # one is dead weight, and a reader searching the page for "stderr" would find only that.
    body = _STDERR_STYLE.sub("", body)
    Path(html).write_text(body, encoding="utf-8")
    return Path(html)


def execute_page(notebook: Path, output: Path, parameters: dict | None = None) -> Path:
    """Execute a report notebook into `output`, in a kernel set up by `setup_kernel`."""
    return execute_notebook(notebook, output, parameters, setup=KERNEL_SETUP)


_MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:root|home|tmp|work|Users|private|var/folders)/")


def page_problems(html: str) -> list[str]:
    """What a rendered page must not hold (see the module docstring), one line each."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    problems = []
    title = soup.title.get_text(strip=True) if soup.title else ""
    if title in ("", "Notebook"):
        problems.append(f"page title is {title!r}")
    for out in soup.find_all(attrs={"data-mime-type": "application/vnd.jupyter.stderr"}):
        problems.append("stderr output: " + out.get_text(" ", strip=True)[:120])
    for img in soup.find_all("img"):
        alt = (img.get("alt") or "").strip()
        if not alt or alt == DEFAULT_ALT:
            problems.append("image without alt text")
        if not str(img.get("src", "")).startswith("data:"):
            problems.append(f"image not embedded: {str(img.get('src'))[:80]}")
        img["src"] = ""
    for tag in soup.find_all(["style", "script"]):
        tag.decompose()
    text = str(soup)
    found = set(_MACHINE_PATH.findall(text)) | ({str(REPO_ROOT)} if str(REPO_ROOT) in text else set())
    problems += [f"absolute path of the rendering machine: {path}" for path in sorted(found)]
    if "cpu: cpu" in text:
        problems.append("raw device string 'cpu: cpu' (use report.device_label)")
    for tbl in soup.select("table.dataframe"):
        if tbl.select("tbody tr th"):
            problems.append("a table shows the pandas row index")
            break
    return problems


# --------------------------------------------------------------------------- records and adapters


def _relative_config(config: dict) -> dict:
    """A record's config with absolute paths (output_dir, glue_dir, init_adapter) made
    repository-relative (`rundir.display_path`)."""
    out = dict(config)
    for key in PATH_FIELDS:
        value = out.get(key)
        if isinstance(value, str) and Path(value).is_absolute():
            out[key] = display_path(value)
    return out


def _keeps_adapter(record: dict, ranks) -> bool:
    """A completed Wq,Wv LoRA run of Table 6 at one of `ranks`: its adapter goes in the report."""
    cfg = record.get("config", {})
    return (is_completed(record) and cfg.get("method") == "lora"
            and sorted(cfg.get("targets", [])) == ["q", "v"] and cfg.get("r") in set(ranks)
            and bool({"table6", "subspace"} & set(cfg.get("tags", []))))


def publish_records(runs_dir: str | os.PathLike, report_dir: str | os.PathLike,
                    adapter_ranks=SUBSPACE_RANKS) -> list[Path]:
    """Copy every record under `runs_dir` (either layout) to ``report_dir/records/<id>.json``,
    its config's paths made repository-relative, and the adapters of the Wq,Wv Table 6 runs at
    `adapter_ranks` (every seed; their LoRA matrices in half precision) to
    ``report_dir/adapters/<id>.safetensors``, so that φ and
    Table 7 can be recomputed from the repository. Both folders are built aside and swapped in:
    an error leaves the previous ones whole, and `runs_dir` may be ``report_dir/records``
    itself. An adapter missing from `runs_dir` but already published for the same run (same
    finish time) is kept."""
    runs_dir, report_dir = Path(runs_dir).resolve(), Path(report_dir).resolve()
    staging = report_dir / ".publishing"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _stage(runs_dir, report_dir, staging, adapter_ranks)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    written = []
    for name in ("records", "adapters"):
        final, previous = report_dir / name, staging / f"{name}.previous"
        if name == "adapters" and not any((staging / name).iterdir()) and not final.exists():
            continue
        if final.exists():
            os.replace(final, previous)
        os.replace(staging / name, final)
        written.append(final)
    shutil.rmtree(staging)
    return written


def _stage(runs_dir: Path, report_dir: Path, staging: Path, adapter_ranks) -> None:
    """`publish_records`' first half: the new records and adapters, in `staging`."""
    (staging / "records").mkdir(parents=True)
    (staging / "adapters").mkdir()
    published = dict(find_records(report_dir / "records")) if (report_dir / "records").is_dir() else {}
    for run_id, path in find_records(runs_dir):
        record = json.loads(path.read_text())
        record["config"] = _relative_config(record.get("config", {}))
        (staging / "records" / f"{run_id}.json").write_text(json.dumps(record, indent=1, default=str))
        if not _keeps_adapter(record, adapter_ranks):
            continue
        adapter = find_adapter(runs_dir, run_id)
        old = report_dir / "adapters" / f"{run_id}.safetensors"
        if adapter is None and old.is_file() and run_id in published:
            same = json.loads(published[run_id].read_text()).get("finished_at") == record.get("finished_at")
            adapter = old if same else None
        if adapter is not None and adapter == old:
            shutil.copyfile(adapter, staging / "adapters" / f"{run_id}.safetensors")
        elif adapter is not None:
            new = publish_lora_tensors(adapter, staging / "adapters" / f"{run_id}.safetensors")
            if old.is_file() and same_adapter(new, old):
                shutil.copyfile(old, new)  # the same content: keep the committed bytes


# --------------------------------------------------------------------------- the report


def _parameter_path(path: Path) -> str:
    """A path for a notebook parameter: repository-relative inside the checkout (the pages
    then show no machine folder), absolute outside it."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def build_report(runs_dir: str | os.PathLike, figures_dir: str | os.PathLike = REPO_ROOT / "figures",
                 report_dir: str | os.PathLike = REPO_ROOT / "report", subspace: bool | None = None,
                 force: bool = False, strict: bool = False, adapter_ranks=SUBSPACE_RANKS) -> list[Path]:
    """Publish the records and §7 adapters of `runs_dir` to `report_dir` (`publish_records`),
    then execute ``analysis.ipynb`` (and ``subspace.ipynb``: by default when `runs_dir` has its
    adapters) and render them to ``index.html`` / ``subspace.html``; figures and tables go to
    `figures_dir`. Returns what it wrote: nothing when the report is newer than every record,
    notebook and module (``force`` renders anyway). Each page is checked (`page_problems`):
    problems are warnings, or an error with ``strict``."""
    runs_dir, figures_dir, report_dir = Path(runs_dir).resolve(), Path(figures_dir).resolve(), Path(report_dir).resolve()
    subspace_dir = runs_dir
    if report_dir == (REPO_ROOT / "report").resolve() and not has_subspace_runs(runs_dir) \
            and has_subspace_runs(ARCHIVED_SUBSPACE_RUNS):  # the committed report, until §7 has its runs
        subspace_dir = ARCHIVED_SUBSPACE_RUNS
    if subspace is None:
        subspace = has_subspace_runs(subspace_dir)
    pages = [("analysis", "index.html", {"subspace_report": "subspace.html" if subspace else None})]
    if subspace:
        pages.append(("subspace", "subspace.html", {} if subspace_dir == runs_dir else
                      {"runs_dir": _parameter_path(subspace_dir)}))
    outputs = [report_dir / html for _, html, _ in pages]
    inputs = [p for _, p in find_records(runs_dir)] + [NOTEBOOKS / f"{name}.ipynb" for name, _, _ in pages] \
        + list(Path(__file__).parent.glob("*.py"))
    if not force and all(p.exists() for p in outputs) and inputs and \
            min(p.stat().st_mtime for p in outputs) > max(p.stat().st_mtime for p in inputs):
        return []  # nothing changed since the report was rendered
    report_dir.mkdir(parents=True, exist_ok=True)
    written = publish_records(runs_dir, report_dir, adapter_ranks)
    # The pages read the published records (and §7 adapters), so that what a reader of the
    # report can download is exactly what it was computed from.
    params = {"runs_dir": _parameter_path(report_dir / "records"), "figures_dir": _parameter_path(figures_dir)}
    problems = {}
    with tempfile.TemporaryDirectory(prefix="lora_nb_report_") as executed:
        for name, html, extra in pages:
            out = execute_page(NOTEBOOKS / f"{name}.ipynb", Path(executed) / f"{name}.ipynb", {**params, **extra})
            page = render_html(out, report_dir / html)
            written.append(page)
            problems.update({f"{html}: {p}": None for p in page_problems(page.read_text(encoding="utf-8"))})
    if problems:
        message = "the rendered report has problems:\n  " + "\n  ".join(problems)
        if strict:
            raise RuntimeError(message)
        warnings.warn(message, stacklevel=2)
    return written
