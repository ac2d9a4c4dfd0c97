"""The GPU check (`python -m benchmarks.gpu_check`): the whole --cpu --tiny run, the run without
`datasets`, the projection's arithmetic and the documented length fallback."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import gpu_check

REPO = Path(__file__).resolve().parents[1]
GLUE = Path(__file__).resolve().parents[1].parent / "shared" / "glue"
SECTIONS = ("part1_step_throughput", "part2_packing", "part3_real_run", "part4_projection")


def run_script(*args: str, env: dict | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    """python -m benchmarks.gpu_check --cpu --tiny on one thread, offline, on the local GLUE folder."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--cpu", "--tiny", "--threads", "1",
                           "--glue-dir", str(GLUE), *args], capture_output=True, text=True,
                          env=full_env, cwd=REPO, timeout=timeout)


def sections(markdown: str) -> dict[str, str]:
    """'1' … '4' → the text of the section "## 1. …"."""
    return {chunk[0]: chunk for chunk in markdown.split("\n## ")[1:]}


def first_table(text: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the first Markdown table in `text`."""
    lines = text.splitlines()
    begin = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    table = []
    for ln in lines[begin:]:
        if not ln.startswith("|"):
            break
        table.append([c.strip() for c in ln.strip().strip("|").split("|")])
    assert len(table) >= 3, f"no table rows in:\n{text}"
    return table[0], table[2:]


@pytest.mark.slow
def test_tiny_run_writes_every_section(tmp_path):
    if not GLUE.is_dir():
        pytest.skip(f"no local GLUE folder at {GLUE}")
    out = tmp_path / "gpu.md"
    proc = run_script("--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    markdown = out.read_text()
    assert markdown in proc.stdout
    found = sections(markdown)
    assert set(found) == {"1", "2", "3", "4"}, list(found)
    for number, text in found.items():
        head, rows = first_table(text)
        assert rows, f"section {number}: empty table"
        columns = [i for i, h in enumerate(head) if "tokens/s" in h or h == "ms/step"]
        assert any(head[i] == "ms/step" for i in columns), (number, head)
        assert any("tokens/s" in head[i] for i in columns), (number, head)
        for row in rows:
            for i in columns:
                assert float(row[i]) > 0, (number, head[i], row)
    results = json.loads(out.with_suffix(".json").read_text())
    for key in SECTIONS:
        assert key in results and results[key].get("rows"), key
    # methods × batches × length distributions × precisions (bf16 where the CPU runs it)
    assert len(results["part1_step_throughput"]["rows"]) >= 2 * 2 * 2
    assert [r["processes"] for r in results["part2_packing"]["rows"]] == [1, 2]
    assert {r["method"] for r in results["part3_real_run"]["rows"]} == {"lora", "full"}
    assert results["part4_projection"]["total_hours_one_process"] > 0


def test_without_datasets_parts_1_and_3(tmp_path):
    """Where `datasets` is missing (the GPU machine may lack it) part 1 still runs and part 3 says
    it is skipped."""
    stub = tmp_path / "stub" / "datasets"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'datasets'\", name='datasets')\n")
    out = tmp_path / "gpu.md"
    pythonpath = os.pathsep.join([str(stub.parent), os.environ.get("PYTHONPATH", "")])
    proc = run_script("--out", str(out), "--parts", "1,3", "--batches", "16", "--steps", "1",
                      "--warmup", "0", "--length-sample", "500", env={"PYTHONPATH": pythonpath})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.with_suffix(".json").read_text())
    assert results["part3_real_run"]["skipped"] == "skipped: datasets not installed"
    assert "skipped: datasets not installed" in proc.stdout
    head, rows = first_table(sections(out.read_text())["1"])
    assert rows and all(float(r[head.index("tokens/s")]) > 0 for r in rows)


def test_sweep_workload_arithmetic():
    grid = {"a": (16, 3, 1e-3), "b": (32, 2, 1e-3)}
    sizes = {"a": 100, "b": 64}
    tokens = {"a": 10.0, "b": 5.0}
    rows = gpu_check.sweep_workload(grid, sizes, tokens, methods=("lora", "full"), seeds=2,
                                    full_epochs=4, table6_cells=3, table6_task="a")
    got = {(r["table"], r["task"], r["method"]): (r["runs"], r["epochs"], r["steps"], r["tokens"])
           for r in rows}
    assert got == {
        # ⌈100/16⌉ = 7 steps per epoch; tokens = runs · epochs · n · mean
        ("table2", "a", "lora"): (2, 3, 2 * 3 * 7, 2 * 3 * 100 * 10.0),
        ("table2", "a", "full"): (2, 4, 2 * 4 * 7, 2 * 4 * 100 * 10.0),
        # ⌈64/32⌉ = 2
        ("table2", "b", "lora"): (2, 2, 2 * 2 * 2, 2 * 2 * 64 * 5.0),
        ("table2", "b", "full"): (2, 4, 2 * 4 * 2, 2 * 4 * 64 * 5.0),
        ("table6", "a", "lora"): (3, 3, 3 * 3 * 7, 3 * 3 * 100 * 10.0),
    }
    hours = gpu_check.project_hours(rows, lambda task, method: 100.0 if method == "full" else 200.0)
    first = hours[0]  # a, lora: 6000 tokens at 200/s
    assert first["hours"] == pytest.approx(6000 / 200 / 3600)
    assert first["ms_per_step"] == pytest.approx(1000 * (6000 / 42) / 200)


def test_paper_grid_matches_table9():
    grid, full_epochs, _ = gpu_check.paper_grid()
    assert grid["mnli"][:2] == (16, 30) and grid["sst2"][:2] == (16, 60) and full_epochs == 10
    rows = gpu_check.sweep_workload(grid, gpu_check.GLUE_TRAIN_SIZES,
                                    gpu_check.MEAN_TOKENS_FALLBACK)
    assert len(rows) == 8 * 4 + 1
    mnli_lora = next(r for r in rows
                     if (r["table"], r["task"], r["method"]) == ("table2", "mnli", "lora"))
    assert mnli_lora["steps"] == 5 * 30 * math.ceil(392702 / 16)


def test_lognormal_fallback_means():
    rng = np.random.default_rng(0)
    for task, mean in (("sst2", 13.3), ("mnli", 40.3)):
        dist = gpu_check.LengthDistribution(task, "fallback",
                                            lognormal=gpu_check.LOGNORMAL_FALLBACK[task])
        assert dist.mean == pytest.approx(mean, rel=0.03)
        sample = dist.sample(20000, rng)
        assert sample.min() >= 3 and sample.max() <= 512
        assert sample.mean() == pytest.approx(mean, rel=0.05)
    batches = gpu_check.batch_lengths(dist, batch=16, count=10, seed=0)
    assert len(batches) == 10 and all(len(b) == 16 for b in batches)
    # grouped by length: each batch spans a narrow range; stratified: the mean is the population's
    spread = np.mean([b.max() - b.min() for b in batches])
    assert spread < 0.5 * np.mean([b.mean() for b in batches])
    assert np.mean(np.concatenate(batches)) == pytest.approx(40.3, rel=0.1)
    warm, measured = gpu_check.step_lengths(dist, batch=16, warmup=2, steps=5, seed=0)
    assert len(warm) == 2 and len(measured) == 5
    assert warm[0].max() >= max(b.max() for b in measured)
