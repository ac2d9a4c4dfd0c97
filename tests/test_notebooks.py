"""End to end through papermill: the smoke sweep executes the training notebook for every run,
then the analysis and subspace notebooks render the report from those records and adapters."""

import json

import pytest

from conftest import GLUE_DIR
from lora_nb.report import build_report
from lora_nb.sweep import build_grid, run_sweep


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    specs = build_grid("smoke", root / "runs", glue_dir=str(GLUE_DIR))
    outcomes = run_sweep(specs, workers=2, progress=False)
    written = build_report(root / "runs", figures_dir=root / "figures", report_dir=root / "report")
    return root, specs, outcomes, written


def test_every_smoke_run_completes_through_its_notebook(smoke):
    root, specs, outcomes, _ = smoke
    assert [o.status for o in outcomes] == ["completed"] * len(specs), [o.reason for o in outcomes]
    for spec in specs:
        executed = json.loads((root / "runs" / spec.run_id / "train.ipynb").read_text())
        params = next(c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", []))
        assert f'task = "{spec.config.task}"' in "".join(params["source"])
        text = json.dumps([c.get("outputs", []) for c in executed["cells"]])
        assert "best epoch 1" in text and "trainable_without_head" in text


def test_report_shows_both_tables_beside_the_papers_numbers(smoke):
    root, _, _, written = smoke
    html = (root / "report" / "index.html").read_text()
    for needle in ("Table 2", "Table 6", "paper (RoBERTa-base)", "paper (GPT-3 175B)", "tn292",
                   "data:image/png;base64", "ours (all-MiniLM-L6-v2)"):
        assert needle in html, needle
    assert "import pandas" not in html  # code is hidden
    for name in ("table2.csv", "table2.md", "table6.csv", "table6.md", "runs.csv",
                 "table2_score_vs_params.png", "table6_rank_curves.png", "training_curves.png",
                 "table2_score_vs_params.svg"):
        assert (root / "figures" / name).stat().st_size > 0, name
    assert len(list((root / "report" / "records").glob("*.json"))) == 7


def test_subspace_report_from_the_smoke_adapters(smoke):
    root, _, _, _ = smoke
    html = (root / "report" / "subspace.html").read_text()
    for needle in ("Figure 3", "Figure 4", "Table 7", "amplification", "top direction"):
        assert needle in html, needle
    for name in ("fig3_subspace_r8_r64.png", "fig4_subspace_seeds.png", "table7_amplification.csv",
                 "table7_amplification.png"):
        assert (root / "figures" / name).stat().st_size > 0, name


def test_report_is_not_rebuilt_when_nothing_changed(smoke):
    root, _, _, _ = smoke
    before = (root / "report" / "index.html").stat().st_mtime
    assert build_report(root / "runs", figures_dir=root / "figures", report_dir=root / "report") == []
    assert (root / "report" / "index.html").stat().st_mtime == before
