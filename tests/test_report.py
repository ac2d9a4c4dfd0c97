"""The rendered report, checked: the committed pages and a page rendered here from a tiny
executed notebook hold no stderr output, no absolute path of the rendering machine, a real title,
embedded images with alt text, and tables without the pandas row index. The checks below are
written here, independently of `lora_nb.report.page_problems` (which `build_report` runs); a
test feeds both a page with every fault."""

from __future__ import annotations

import json

import torch
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from bs4 import BeautifulSoup
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from lora_nb import report
from lora_nb.rundir import REPO_ROOT, find_records

REPORT = REPO_ROOT / "report"
COMMITTED = [REPORT / "index.html", REPORT / "subspace.html"]
DEFAULT_ALT = "No description has been provided for this image"
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:root|home|tmp|work)/")


def faults(html: str) -> list[str]:
    """Everything a published page must not hold, one line per fault."""
    soup = BeautifulSoup(html, "html.parser")
    found = []
    title = soup.title.get_text(strip=True) if soup.title else ""
    if title in ("", "Notebook"):
        found.append(f"title {title!r}")
    found += [f"stderr cell: {el.get_text(' ', strip=True)[:100]}"
              for el in soup.select('.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]')]
    for img in soup.find_all("img"):
        alt = (img.get("alt") or "").strip()
        if not alt or alt == DEFAULT_ALT:
            found.append("img without alt text")
        if not str(img.get("src", "")).startswith("data:"):
            found.append(f"img not a data URI: {str(img.get('src'))[:60]}")
        img["src"] = ""  # base64 may spell anything
    for tag in soup.find_all(["style", "script"]):
        tag.decompose()
    text = str(soup)
    found += [f"machine path {m!r}" for m in sorted(set(MACHINE_PATH.findall(text)))]
    if str(REPO_ROOT) in text:
        found.append(f"checkout path {REPO_ROOT}")
    if any(t.select("tbody tr th") for t in soup.select("table.dataframe")):
        found.append("table with the pandas row index")
    return found


@pytest.mark.parametrize("page", COMMITTED, ids=lambda p: p.name)
def test_committed_pages(page):
    if not page.exists():
        pytest.skip(f"{page.name} is not committed")
    html = page.read_text(encoding="utf-8")
    problems = faults(html)
    assert not problems, f"{page.name} (re-render it: lora_nb.report.build_report): " + "; ".join(problems)
    assert "stderr" not in html  # not even the template's style rule for it


# --------------------------------------------------------------------------- the checks themselves

BAD_PAGE = """<html><head><title>Notebook</title><style>.x{background:url(/root/style.css)}</style></head><body>
<div class="jp-RenderedText jp-OutputArea-output" data-mime-type="application/vnd.jupyter.stderr"><pre>warning</pre></div>
<img src="data:image/png;base64,AAAA"/>
<img src="data:image/png;base64,AAAA" alt="No description has been provided for this image"/>
<img src="figures/table2.png" alt="Table 2"/>
<p>read from /home/someone/runs and /tmp/pytest-3/x</p>
<table class="dataframe"><tbody><tr><th>0</th><td>1</td></tr></tbody></table>
</body></html>"""


def test_the_checks_catch_every_fault():
    expected = ["title 'Notebook'", "stderr cell: warning", "img without alt text", "img without alt text",
                "img not a data URI: figures/table2.png", "machine path '/home/'", "machine path '/tmp/'",
                "table with the pandas row index"]
    assert faults(BAD_PAGE) == expected  # /root/ in CSS is no shown path
    problems = report.page_problems(BAD_PAGE)
    assert len(problems) == len(expected)
    for needle in ("title", "stderr", "alt text", "not embedded", "/home/", "/tmp/", "row index"):
        assert any(needle in p for p in problems), needle
    fine = BAD_PAGE.replace("<title>Notebook", "<title>A page").split("<div", 1)[0] + "</head></html>"
    assert faults(fine) == [] and report.page_problems(fine) == []
    assert faults(f"<title>t</title><p>{REPO_ROOT}/figures</p>") != []


# --------------------------------------------------------------------------- a page rendered here


def _tiny_notebook(path: Path) -> Path:
    nb = new_notebook(cells=[
        new_markdown_cell("# A *tiny* page: checked\n\nText."),
        new_code_cell("label = 'x'", metadata={"tags": ["parameters"]}),
        new_code_cell(
            "import warnings\n"
            "from tqdm.auto import tqdm\n"  # without the report's kernel setup: a warning or a widget bar
            "import matplotlib.pyplot as plt\nimport pandas as pd\n"
            "from lora_nb.rundir import REPO_ROOT\n"
            "for _ in tqdm(range(3), desc='work'):\n    pass\n"
            "print(REPO_ROOT / 'figures' / 'x.png')"),
        new_code_cell("pd.DataFrame({'score': [71.23456, 9.5], 'method': ['LoRA', 'FT'], 'seeds': [3.0, 3.0]})"),
        new_code_cell("pd.DataFrame({'r': [1, 8], 'phi': [0.00123, 0.5]}).set_index('r')"),
        new_markdown_cell("## Figures"),
        new_code_cell("fig, ax = plt.subplots(figsize=(3, 2)); ax.plot([1, 2]); fig.suptitle('Two points, rising');"),
        new_code_cell("fig, ax = plt.subplots(figsize=(3, 2)); ax.plot([2, 1]); ax.set_title(label);"),
        new_code_cell("fig, ax = plt.subplots(figsize=(3, 2)); ax.plot([1, 1]);"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("page")
    executed = report.execute_page(_tiny_notebook(tmp / "tiny.ipynb"), tmp / "tiny.out.ipynb",
                                       {"label": "A falling line"})
    html = report.render_html(executed, tmp / "tiny.html").read_text(encoding="utf-8")
    return nbformat.read(executed, as_version=4), html


def test_rendered_page_has_no_faults(rendered):
    _, html = rendered
    assert faults(html) == []
    assert report.page_problems(html) == []
    assert "stderr" not in html


def test_rendered_page_title_alt_text_paths_and_tables(rendered):
    nb, html = rendered
    soup = BeautifulSoup(html, "html.parser")
    assert soup.title.get_text() == "A tiny page: checked"
    assert [img["alt"] for img in soup.find_all("img")] == [
        "Two points, rising", "A falling line", "Figure: Figures"]  # suptitle, axes title, its section
    assert all(img["src"].startswith("data:image/png;base64,") for img in soup.find_all("img"))
    text = soup.get_text(" ")
    assert "figures/x.png" in text and "IProgress" not in text and "work:" not in text  # no bar, no warning
    tables = soup.select("table.dataframe")
    assert len(tables) == 2 and not any(t.select("tbody tr th") for t in tables)
    first = [[td.get_text() for td in tr.find_all("td")] for tr in tables[0].select("tbody tr")]
    assert first == [["71.2", "LoRA", "3"], ["9.5", "FT", "3"]]  # rounded by column, whole numbers whole
    assert [th.get_text() for th in tables[1].select("thead th")] == ["r", "phi"]  # a named index: a column
    # The executed notebook itself holds no stream on stderr and no progress-bar widget.
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.get("name") == "stderr"]
    assert not [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]


def test_prepare_page_without_a_kernel():
    """Title from the first heading; a PNG without alt metadata gets its section's name; paths
    under the checkout become relative; outputs elsewhere are left alone."""
    cell = new_code_cell("")
    cell.outputs = [new_output("stream", name="stdout", text=f"saved {REPO_ROOT}/figures/a.png\n"),
                    new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}),
                    new_output("display_data", data={"image/png": "iVBORw0KGgo="},
                               metadata={"image/png": {"alt": "Figure 3: φ"}})]
    nb = new_notebook(cells=[new_markdown_cell("Intro without a heading."), new_markdown_cell("# Title `here`"),
                             new_markdown_cell("## Section [two](x.html)"), cell])
    report.prepare_page(nb)
    assert nb.metadata["title"] == "Title here"
    outs = nb.cells[-1].outputs
    assert outs[0]["text"] == "saved figures/a.png\n"
    assert outs[1]["data"] == {"text/html": '<img src="data:image/png;base64,iVBORw0KGgo=" alt="Figure: Section two"/>'}
    assert 'alt="Figure 3: φ"' in outs[2]["data"]["text/html"]


def test_papermill_parameters_cell_gets_a_fixed_id():
    """papermill gives its injected cell a random id, which the page prints: two renders of the
    same records would differ."""
    injected = new_code_cell("runs_dir = 'x'", metadata={"tags": ["injected-parameters"]})
    injected["id"] = "f3a9c2d1"
    other = new_code_cell("")
    before = other["id"]
    nb = report.prepare_page(new_notebook(cells=[new_markdown_cell("# T"), injected, other]))
    assert nb.cells[1]["id"] == "injected-parameters" and nb.cells[2]["id"] == before


def test_device_label_and_format_frame():
    assert report.device_label("cpu: cpu") == "CPU"
    assert report.device_label("cpu: x86_64") == "CPU (x86_64)"
    assert report.device_label("cuda: NVIDIA H200") == "NVIDIA H200"
    assert report.device_label(None) == ""
    df = pd.DataFrame({"big": [12345.6, 2.0], "small": [0.001234, 0.0005], "mid": [1.23456, 2.5],
                       "n": [22565376, 3], "whole": [3.0, float("nan")], "text": ["a", None]}, index=[4, 7])
    out = report.format_frame(df)
    assert list(out.columns) == ["big", "small", "mid", "n", "whole", "text"]  # the filtered index is gone
    assert out.to_dict("list") == {"big": ["12,346", "2"], "small": ["0.00123", "0.00050"], "mid": ["1.23", "2.50"],
                                   "n": ["22,565,376", "3"], "whole": ["3", ""], "text": ["a", ""]}
    grouped = pd.DataFrame({"task": ["a", "b"], "x": [1.0, 2.5]}).set_index("task")
    assert list(report.format_frame(grouped).columns) == ["task", "x"]


# --------------------------------------------------------------------------- records and adapters


def _run(runs: Path, run_id: str, record: dict, adapter: float | None) -> None:
    """A run folder; its adapter holds one LoRA matrix filled with `adapter` and a head tensor."""
    import torch
    from safetensors.torch import save_file

    (runs / run_id).mkdir(parents=True)
    (runs / run_id / "record.json").write_text(json.dumps(record))
    if adapter is not None:
        save_file({"m.query.lora_A": torch.full((2, 3), adapter), "classifier.weight": torch.ones(2)},
                  str(runs / run_id / "adapter.safetensors"))


def _published(path: Path) -> dict:
    from lora_nb.checkpoint import read_adapter

    return read_adapter(path)[0]


def _rec(run_id: str, r: int, targets=("q", "v"), tags=("table6",), status="completed") -> dict:
    return {"status": status, "finished_at": f"2026-01-01T00:00:{r:02d}",
            "config": {"method": "lora", "targets": list(targets), "r": r, "tags": list(tags), "seed": 0,
                       "output_dir": str(REPO_ROOT / "runs" / "cpu" / run_id), "glue_dir": "/data/glue",
                       "init_adapter": None}}


def test_publish_records_relative_paths_adapters_and_a_safe_swap(tmp_path):
    runs = tmp_path / "runs"
    for r in (1, 2, 4, 8, 64):
        _run(runs, f"t6-mnli-qv-r{r}-s0", _rec(f"t6-mnli-qv-r{r}-s0", r), float(r))
    _run(runs, "t6-mnli-qv-r16-s0", _rec("x", 16), 16.0)            # a rank §7 does not use
    _run(runs, "t6-mnli-q-r8-s0", _rec("x", 8, targets=("q",)), 8.0)  # Wq alone
    _run(runs, "t2-sst2-lora-s0", _rec("x", 8, tags=("table2",)), 8.0)
    _run(runs, "t6-mnli-qv-r2-s1", _rec("x", 2, status="failed"), None)
    out = tmp_path / "report"
    (out / "records").mkdir(parents=True)
    (out / "records" / "stale.json").write_text("{}")  # gone after publishing: the runs decide
    written = report.publish_records(runs, out)
    assert written == [out / "records", out / "adapters"]
    records = dict(find_records(out / "records"))
    assert sorted(records) == sorted(p.name for p in runs.iterdir())
    rec = json.loads(records["t6-mnli-qv-r8-s0"].read_text())
    assert rec["config"]["output_dir"] == "runs/cpu/t6-mnli-qv-r8-s0"  # repository-relative
    assert rec["config"]["glue_dir"] == "glue" and rec["config"]["init_adapter"] is None  # outside: its name
    assert sorted(p.name for p in (out / "adapters").iterdir()) == [
        f"t6-mnli-qv-r{r}-s0.safetensors" for r in (1, 2, 4, 64, 8)]
    published = _published(out / "adapters" / "t6-mnli-qv-r64-s0.safetensors")
    assert list(published) == ["m.query.lora_A"]  # the LoRA matrices alone, in half precision
    assert published["m.query.lora_A"].dtype == torch.float16 and published["m.query.lora_A"].eq(64).all()
    assert not (out / ".publishing").exists()

    # Publishing the committed layout onto itself keeps everything, byte for byte.
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    report.publish_records(out / "records", out)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before

    # A run folder that lost its adapter keeps the published one for the same run (same finish).
    (runs / "t6-mnli-qv-r4-s0" / "adapter.safetensors").unlink()
    report.publish_records(runs, out)
    assert _published(out / "adapters" / "t6-mnli-qv-r4-s0.safetensors")["m.query.lora_A"].eq(4).all()


def test_publish_leaves_the_previous_report_whole_on_error(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    _run(runs, "t6-mnli-qv-r8-s0", _rec("x", 8), 1.0)
    out = tmp_path / "report"
    (out / "records").mkdir(parents=True)
    (out / "records" / "t6-mnli-qv-r8-s0.json").write_text('{"old": true}')

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(report, "publish_lora_tensors", broken)
    with pytest.raises(OSError, match="disk full"):
        report.publish_records(runs, out)
    assert (out / "records" / "t6-mnli-qv-r8-s0.json").read_text() == '{"old": true}'
    assert not (out / "adapters").exists() and not (out / ".publishing").exists()


def test_committed_adapters_are_the_section_7_runs():
    """What `build_report` publishes for §7, in the report and its archive: every adapter has its
    record beside it, is a Wq,Wv Table 6 run at r in (1, 2, 4, 8, 64), and is small."""
    folders = sorted(p for p in REPORT.rglob("adapters") if p.is_dir())
    assert folders, "no committed adapters (the archived 250-step run's are what §7 reads)"
    for adapters in folders:
        records = dict(find_records(adapters.parent / "records"))
        paths = list(adapters.glob("*.safetensors"))
        assert paths, adapters
        for path in paths:
            assert path.stem in records, path.name
            assert report._keeps_adapter(json.loads(records[path.stem].read_text()), report.SUBSPACE_RANKS), path.name
            assert path.stat().st_size < 4e6, path.name
