"""The notebooks as a user meets them, and end to end through papermill.

- Each notebook in notebooks/ executes cleanly with its working directory in notebooks/ (as
  JupyterLab runs it): no error, nothing on stderr, no ANSI escape codes in any output.
- train.ipynb: its parameters are RunConfig's fields; a finished setting is shown again, not
  rerun; a changed setting gets its own run folder.
- The smoke sweep executes the training notebook for every run, then the analysis and subspace
  notebooks render the report from those records and adapters.
- `make lab`: --allow-root only as root, options from LAB_ARGS, installs only when pyproject.toml
  changed.
"""

import ast
import json
import os
import shutil
import subprocess
from pathlib import Path

import papermill
import pytest

from conftest import GLUE_DIR
from lora_nb.config import RunConfig
from lora_nb.report import build_report
from lora_nb.rundir import REPO_ROOT, default_runs_dir, display_path, read_record
from lora_nb.subspace import default_subspace_runs_dir
from lora_nb.grid import build_grid, group_settings
from lora_nb.sweep import run_sweep
from lora_nb.parameters import notebook_config, seed_config

NOTEBOOKS = REPO_ROOT / "notebooks"
# train.ipynb's defaults train for minutes; these take seconds (and keep every other default).
TINY = dict(max_train_samples=32, max_eval_samples=32, epochs=1, max_length=32)
# Names in train.ipynb's parameters cell that are not RunConfig fields.
NOTEBOOK_ONLY = {"seeds", "progress", "cuda_visible_devices"}


# ---------------------------------------------------------------------------------------------
# Executing a notebook as JupyterLab does


def _strings(value):
    """Every string inside an output (its text, data of every MIME type, traceback)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def assert_clean(nb: dict, name: str) -> None:
    """No error output, nothing written to stderr, no ANSI escape codes, in any cell."""
    problems = []
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            kind = out.get("output_type")
            if kind == "error":
                problems.append(f"cell {i}: error {out.get('ename')}: {out.get('evalue')}")
            elif kind == "stream" and out.get("name") == "stderr":
                problems.append(f"cell {i}: stderr: {''.join(out.get('text', ''))[:500]!r}")
            if any("\x1b[" in s for s in _strings(out)):
                problems.append(f"cell {i}: ANSI escape code in a {kind} output")
    assert not problems, f"{name}:\n" + "\n".join(problems)


def text_of(nb: dict) -> str:
    """All text the executed notebook shows (streams, text/plain, text/html, text/markdown)."""
    parts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append("".join(out["text"]))
            for mime in ("text/plain", "text/html", "text/markdown"):
                if mime in out.get("data", {}):
                    parts.append("".join(out["data"][mime]))
    return "\n".join(parts)


@pytest.fixture
def run_notebook(tmp_path, monkeypatch):
    """Execute notebooks/<name> with notebooks/ as its working directory, as JupyterLab does, in a
    kernel that sees GLUE as `make lab` passes it ($LORA_NB_GLUE_DIR); return the executed
    notebook, checked clean."""
    monkeypatch.setenv("LORA_NB_GLUE_DIR", str(GLUE_DIR))
    count = iter(range(1000))

    def execute(name: str, **parameters) -> dict:
        out = tmp_path / f"{Path(name).stem}-{next(count)}.ipynb"
        papermill.execute_notebook(
            str(NOTEBOOKS / name), str(out), parameters=parameters, cwd=str(NOTEBOOKS),
            kernel_name="python3", progress_bar=False)
        nb = json.loads(out.read_text())
        assert_clean(nb, name)
        return nb

    return execute


def test_the_clean_check_catches_errors_stderr_and_ansi():
    def nb(*outputs):
        return {"cells": [{"cell_type": "code", "outputs": list(outputs)}]}

    assert_clean(nb({"output_type": "stream", "name": "stdout", "text": ["fine\n"]}), "ok")
    for bad in ({"output_type": "error", "ename": "ValueError", "evalue": "x", "traceback": []},
                {"output_type": "stream", "name": "stderr", "text": ["IProgress not found\n"]},
                {"output_type": "execute_result", "data": {"text/plain": ["\x1b[31mred\x1b[0m"]}}):
        with pytest.raises(AssertionError):
            assert_clean(nb(bad), "bad")


def test_every_notebook_has_a_test():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == [
        "analysis.ipynb", "subspace.ipynb", "train.ipynb"]


# ---------------------------------------------------------------------------------------------
# train.ipynb


def _parameters_cell(path: Path) -> dict:
    """The names and literal values of a notebook's `parameters` cell, in order."""
    nb = json.loads(path.read_text())
    cells = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert len(cells) == 1, "exactly one cell tagged `parameters`"
    params: dict = {}
    for node in ast.parse("".join(cells[0]["source"])).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, ast.unparse(node)
        name = node.targets[0].id
        assert name not in params, f"{name} assigned twice"
        params[name] = ast.literal_eval(node.value)  # papermill can override only literals
    return params


def test_train_parameters_are_the_run_config_fields(monkeypatch):
    monkeypatch.setenv("LORA_NB_GLUE_DIR", str(GLUE_DIR))
    params = _parameters_cell(NOTEBOOKS / "train.ipynb")
    assert set(params) - NOTEBOOK_ONLY == set(RunConfig.field_names())
    assert NOTEBOOK_ONLY <= set(params)
    assert (params["seeds"], params["progress"], params["cuda_visible_devices"]) == (None, True, None)
    # The defaults are a quick CPU run (all-MiniLM-L6-v2, a training subset, two epochs), not
    # RunConfig's paper setting, so only their validity is checked.
    config = notebook_config(params).validate()
    assert config.model == params["model"] and config.task == params["task"]
    assert Path(config.output_dir).is_relative_to(REPO_ROOT / "runs" / "notebook")


def _derived_run_dir(**parameters) -> Path:
    """The folder train.ipynb runs `parameters` into when output_dir is None."""
    params = {**_parameters_cell(NOTEBOOKS / "train.ipynb"), **parameters, "output_dir": None}
    config = notebook_config(params)
    return Path(seed_config(config, config.seed).output_dir)


@pytest.mark.slow
def test_train_notebook_runs_clean_into_a_given_folder(run_notebook, tmp_path):
    out = tmp_path / "run"
    nb = run_notebook("train.ipynb", **TINY, output_dir=str(out))
    record = read_record(out)
    assert record["status"] == "completed"
    assert record["config"]["max_train_samples"] == 32 and record["config"]["epochs"] == 1
    text = text_of(nb)
    assert "trainable_without_head" in text and record["primary_metric"] in text
    # tqdm.auto draws its bars as widgets (ipywidgets installed), not as text on stderr.
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
               for c in nb["cells"] for o in c.get("outputs", []))


def _named(folder: Path) -> str:
    """How the notebook names a derived run folder: runs/notebook/<settings>-<hash>, then the seed."""
    return display_path(folder).rsplit("-s", 1)[0]


@pytest.mark.slow
def test_train_notebook_names_its_folder_after_the_settings(run_notebook):
    first, other = _derived_run_dir(**TINY), _derived_run_dir(**TINY, r=4)
    assert first != other
    assert first.parent == other.parent == REPO_ROOT / "runs" / "notebook"
    for folder in (first, other):
        shutil.rmtree(folder, ignore_errors=True)  # left by an interrupted earlier test
    parent_existed = first.parent.exists()
    try:
        nb = run_notebook("train.ipynb", **TINY)
        assert _named(first) in text_of(nb)
        record = read_record(first)
        assert record["status"] == "completed"

        # The same setting again: not rerun, the stored result shown.
        again = text_of(run_notebook("train.ipynb", **TINY))
        assert "already completed" in again
        assert f"{record['best_metric']:.4f}" in again
        assert read_record(first)["started_at"] == record["started_at"]

        # A changed parameter: a new run in its own folder.
        nb = run_notebook("train.ipynb", **TINY, r=4)
        assert "already completed" not in text_of(nb)
        assert _named(other) in text_of(nb)
        assert read_record(other)["config"]["r"] == 4
    finally:
        for folder in (first, other):
            shutil.rmtree(folder, ignore_errors=True)
        if not parent_existed and first.parent.is_dir() and not any(first.parent.iterdir()):
            first.parent.rmdir()


# ---------------------------------------------------------------------------------------------
# analysis.ipynb and subspace.ipynb with their defaults: the newest local runs, else the
# committed reference run (report/records). Figures go to a temporary folder, not figures/.


@pytest.mark.slow
@pytest.mark.parametrize("name", ["analysis.ipynb", "subspace.ipynb"])
def test_report_notebook_runs_clean_with_its_defaults(run_notebook, tmp_path, name):
    assert _parameters_cell(NOTEBOOKS / name)["runs_dir"] is None
    figures = tmp_path / "figures"
    nb = run_notebook(name, figures_dir=str(figures))
    default = default_runs_dir() if name == "analysis.ipynb" else default_subspace_runs_dir()
    assert display_path(default) in text_of(nb)
    assert any(figures.glob("*.png")), "no figure written"


# ---------------------------------------------------------------------------------------------
# The smoke sweep, end to end (a real training run per smoke grid point: minutes)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    specs = build_grid("smoke", root / "runs", glue_dir=str(GLUE_DIR))
    outcomes = run_sweep(specs, workers=2, progress=False)
    written = build_report(root / "runs", figures_dir=root / "figures", report_dir=root / "report")
    return root, specs, outcomes, written


@pytest.mark.slow
def test_every_smoke_run_completes_through_its_notebook(smoke):
    root, specs, outcomes, _ = smoke
    assert [o.status for o in outcomes] == ["completed"] * len(specs), [o.reason for o in outcomes]
    for setting in group_settings(specs):  # one execution per setting, its seeds together
        executed = json.loads((root / "runs" / "notebooks" / f"{setting.setting_id}.ipynb").read_text())
        params = next(c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", []))
        source = "".join(params["source"])
        assert f'task = "{setting.config.task}"' in source and f"seeds = {list(setting.seeds)}" in source
        text = json.dumps([c.get("outputs", []) for c in executed["cells"]])
        assert "(best)" in text and "trainable_without_head" in text


@pytest.mark.slow
def test_report_shows_both_tables_beside_the_papers_numbers(smoke):
    root, specs, _, written = smoke
    html = (root / "report" / "index.html").read_text()
    for needle in ("Table 2", "Table 6", "paper (RoBERTa-base)", "paper (GPT-3 175B)", "tn292",
                   "data:image/png;base64", "ours (all-MiniLM-L6-v2)"):
        assert needle in html, needle
    assert "import pandas" not in html  # code is hidden
    for name in ("table2.csv", "table2.md", "table6.csv", "table6.md", "runs.csv",
                 "table2_score_vs_params.png", "table6_rank_curves.png", "table2_score_vs_params.svg"):
        assert (root / "figures" / name).stat().st_size > 0, name
    assert len(list((root / "report" / "records").glob("*.json"))) == len(specs)


@pytest.mark.slow
def test_subspace_report_from_the_smoke_adapters(smoke):
    root, _, _, _ = smoke
    html = (root / "report" / "subspace.html").read_text()
    for needle in ("Figure 3", "Figure 4", "Table 7", "amplification", "top direction"):
        assert needle in html, needle
    for name in ("fig3_subspace_r8_r64.png", "fig4_subspace_seeds.png", "table7_amplification.csv",
                 "table7_amplification.png"):
        assert (root / "figures" / name).stat().st_size > 0, name


@pytest.mark.slow
def test_a_re_render_from_the_same_records_leaves_every_file_byte_identical(smoke):
    root, _, _, _ = smoke
    files = lambda: {p.relative_to(root): p.read_bytes() for folder in ("figures", "report")
                     for p in sorted((root / folder).rglob("*")) if p.is_file()}
    before = files()
    build_report(root / "runs", figures_dir=root / "figures", report_dir=root / "report", force=True)
    after = files()
    assert sorted(after) == sorted(before)
    changed = [str(p) for p in before if before[p] != after[p]]
    assert changed == []


@pytest.mark.slow
def test_report_is_not_rebuilt_when_nothing_changed(smoke):
    root, _, _, _ = smoke
    before = (root / "report" / "index.html").stat().st_mtime
    assert build_report(root / "runs", figures_dir=root / "figures", report_dir=root / "report") == []
    assert (root / "report" / "index.html").stat().st_mtime == before


# ---------------------------------------------------------------------------------------------
# make lab (a dry run, `make -n`, on a copy of the Makefile: nothing is installed or started)


@pytest.fixture
def make_lab(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("no make")
    shutil.copy(REPO_ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()

    def dry_run(uid: int, *args: str) -> str:
        fake_id = fake_bin / "id"  # `id -u` answers `uid`
        fake_id.write_text(f"#!/bin/sh\necho {uid}\n")
        fake_id.chmod(0o755)
        env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}"}
        done = subprocess.run(["make", "-n", "lab", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, check=True)
        return done.stdout

    def stamp(*names: str) -> None:
        for name in names:
            (tmp_path / ".venv" / name).touch()

    return tmp_path, dry_run, stamp


def _lab_line(output: str) -> str:
    lines = [line for line in output.splitlines() if "jupyter lab" in line]
    assert len(lines) == 1, output
    return lines[0]


def test_make_lab_allows_root_only_for_root(make_lab):
    _, dry_run, stamp = make_lab
    stamp(".installed", ".lab-installed")
    as_root = _lab_line(dry_run(0))
    as_user = _lab_line(dry_run(1000))
    assert "--allow-root" in as_root
    assert "--allow-root" not in as_user
    for line in (as_root, as_user):  # the repository root, opened on notebooks/
        assert "--ServerApp.root_dir=." in line and "/lab/tree/notebooks" in line


def test_make_lab_passes_lab_args_last(make_lab):
    _, dry_run, stamp = make_lab
    stamp(".installed", ".lab-installed")
    line = _lab_line(dry_run(1000, "LAB_ARGS=--port 8890 --no-browser"))
    assert line.endswith("--port 8890 --no-browser")


def test_make_lab_installs_only_when_pyproject_changed(make_lab):
    root, dry_run, stamp = make_lab
    install = "pip install -q -e '.[test,lab]'"
    assert install in dry_run(1000)  # first use
    stamp(".installed", ".lab-installed")
    assert "pip install" not in dry_run(1000)
    later = (root / ".venv" / ".lab-installed").stat().st_mtime + 10
    os.utime(root / "pyproject.toml", (later, later))
    assert install in dry_run(1000)
