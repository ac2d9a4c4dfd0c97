"""Records → tables → findings, on a fixed set of hand-written records with means computed by hand."""

import json

import pandas as pd
import pytest

from lora_nb import findings, results, tables


def write(runs, run_id, task, method, seed, metric, tags, trainable=1000, head=100, status="completed", **cfg):
    d = runs / run_id
    d.mkdir(parents=True)
    record = {"status": status, "primary_metric": "accuracy", "best_metric": metric, "best_epoch": 1,
              "config": {"task": task, "method": method, "model": "m", "seed": seed, "tags": tags,
                         "targets": cfg.get("targets", ["q", "v"]), "r": cfg.get("r", 8), "alpha": 8.0,
                         "learning_rate": cfg.get("learning_rate", 1e-3), "epochs": 2, "max_length": 128},
              "parameters": {"total": 10**6, "trainable": trainable, "lora": trainable - head,
                             "head": head, "trainable_without_head": trainable - head},
              "epochs": [{"epoch": 1, "train_seconds": 2.0, "train_loss": 0.5, "primary": metric, "eval": {}}],
              # a curve that levelled off (lora_nb.convergence): four evaluations at one score
              "optimizer_steps": 40, "evaluations": [{"step": s, "primary": metric, "eval": {}} for s in (10, 20, 30, 40)],
              "loss_curve": [[1, 0.7], [2, 0.5]], "data": {"train_examples": 512, "eval_examples": {"validation": 400}}}
    if metric is None:  # no score: constant predictions (Pearson undefined)
        del record["best_metric"], record["best_epoch"]
    record.update(cfg.get("extra", {}))
    (d / "record.json").write_text(json.dumps(record))


@pytest.fixture
def runs(tmp_path):
    for seed, (lora, full) in enumerate([(0.80, 0.70), (0.90, 0.75), (0.85, 0.90)]):
        write(tmp_path, f"t2-sst2-lora-s{seed}", "sst2", "lora", seed, lora, ["table2"], trainable=1100)
        write(tmp_path, f"t2-sst2-full-s{seed}", "sst2", "full", seed, full, ["table2"], trainable=50100)
    write(tmp_path, "t2-sst2-full-s9", "sst2", "full", 9, 0.10, ["table2"], status="failed")
    for r, acc in [(1, 0.60), (8, 0.64), (64, 0.62)]:
        write(tmp_path, f"t6-q-r{r}", "mnli", "lora", 0, acc - 0.05, ["table6"], targets=["q"], r=r)
        write(tmp_path, f"t6-qv-r{r}", "mnli", "lora", 0, acc, ["table6"], targets=["q", "v"], r=r)
    write(tmp_path, "t6-qv-r64-s1", "mnli", "lora", 1, 0.5, ["subspace"], r=64)
    return tmp_path


def test_records_load_one_row_per_run(runs):
    df = tables.load_records(runs)
    assert len(df) == 14 and (df["status"] == "failed").sum() == 1
    assert tables.completed(df).sum() == 13 and not tables.completed(df[df["status"] == "failed"]).any()
    assert tables.completed(pd.DataFrame()).empty  # a folder without records: no rows, no error
    assert set(df.loc[df["method"] == "lora", "weight_type"]) == {"Wq", "Wq,Wv"}


def test_table2_means_and_std_by_hand(runs):
    t2 = tables.table2(tables.load_records(runs)).set_index("method")
    assert t2.at["lora", "mean"] == pytest.approx(85.0)  # mean of 80, 90, 85
    assert t2.at["lora", "std"] == pytest.approx(5.0)  # sample std of 80, 85, 90
    assert t2.at["full", "mean"] == pytest.approx(235 / 3)  # 70, 75, 90: the failed run is left out
    assert t2.at["full", "seeds"] == 3 and t2.at["lora", "trainable_without_head"] == 1000
    wide = findings.table2_display(t2.reset_index(), "m")
    ours = wide[wide["source"] == "ours (m)"].set_index("method")
    assert ours.at["LoRA", "SST-2"] == "85.0 ±5.0" and ours.at["FT", "SST-2"] == "78.3 ±10.4"  # sample std of 70, 75, 90
    assert ours.at["LoRA", "trainable (no head)"] == "0.00M"
    paper = wide[wide["source"] == "paper (RoBERTa-base)"].set_index("method")
    assert paper.at["LoRA", "SST-2"] == "95.1 ±0.2" and paper.at["FT", "SST-2"] == "94.8"  # the paper's ±


def test_ft_at_several_learning_rates_takes_the_best_median_rate_in_table2_and_the_claims(tmp_path):
    """RoBERTa's FT recipe: the learning rate picked on the validation set, by one rule
    (`claims.best_learning_rate`) for the table and the claims."""
    for seed in range(3):
        write(tmp_path, f"t2-sst2-full-lr1e-05-s{seed}", "sst2", "full", seed, 0.70 + seed / 100, ["table2"], learning_rate=1e-5)
        write(tmp_path, f"t2-sst2-full-lr2e-05-s{seed}", "sst2", "full", seed, 0.80 + seed / 100, ["table2"], learning_rate=2e-5)
        write(tmp_path, f"t2-sst2-lora-s{seed}", "sst2", "lora", seed, 0.75, ["table2"])
    t2 = tables.table2(tables.load_records(tmp_path)).set_index("method")
    assert t2.at["full", "mean"] == pytest.approx(81.0) and t2.at["full", "seeds"] == 3
    assert t2.at["full", "learning_rate"] == 2e-5 and t2.at["full", "rates_tried"] == 2
    assert t2.at["lora", "rates_tried"] == 1
    from lora_nb import claims

    df = tables.load_records(tmp_path)
    chosen = claims.best_learning_rate(df[df["method"] == "full"])
    assert set(chosen["learning_rate"]) == {2e-5} and len(chosen) == 3


def test_runs_without_a_score_count_as_failed_not_as_seeds(tmp_path):
    """STS-B runs whose predictions are constant have no Pearson: the cell says how many failed,
    and its mean and seed count are over the others."""
    for seed, value in enumerate([0.80, None, 0.70]):
        write(tmp_path, f"t2-stsb-full-s{seed}", "stsb", "full", seed, value, ["table2"])
    t2 = tables.table2(tables.load_records(tmp_path))
    row = t2.iloc[0]
    assert (row["mean"], row["seeds"], row["failed"]) == (pytest.approx(75.0), 2, 1)
    wide = findings.table2_display(t2, "m")
    assert wide.iloc[0]["STS-B"] == "75.0 ±7.1 (1 failed)"


def test_mnli_reports_mismatched_at_the_evaluation_chosen_on_matched(tmp_path):
    evaluations = [{"step": 10, "primary": 0.80, "eval": {"validation_matched": {"accuracy": 0.80},
                                                        "validation_mismatched": {"accuracy": 0.90}}},
                   {"step": 20, "primary": 0.85, "eval": {"validation_matched": {"accuracy": 0.85},
                                                        "validation_mismatched": {"accuracy": 0.84}}}]
    write(tmp_path, "t2-mnli-lora-s0", "mnli", "lora", 0, 0.85, ["table2"],
          extra={"evaluations": evaluations, "best_step": 20})
    t2 = tables.table2(tables.load_records(tmp_path))
    assert t2.iloc[0]["mismatched"] == pytest.approx(84.0)  # step 20, chosen on matched; not 90
    assert findings.table2_display(t2, "m").iloc[0]["MNLI"] == "m 85.0 / mm 84.0"


def test_table6_by_weight_type_and_rank(runs):
    t6 = tables.table6(tables.load_records(runs))
    assert len(t6) == 6  # the extra-seed subspace run is not a Table 6 cell
    cell = t6[(t6["weight_type"] == "Wq,Wv") & (t6["r"] == 8)].iloc[0]
    assert cell["mean"] == pytest.approx(64.0) and cell["seeds"] == 1 and pd.isna(cell["std"])
    wide = findings.table6_display(t6, "m")
    assert list(wide["weight type"][:2]) == ["Wq", "Wq,Wv"]
    gpt3 = wide[wide["source"] == "paper (GPT-3 175B)"].set_index("weight type")
    assert gpt3.at["Wq,Wv", "r=8"] == "91.6"
    course = wide[wide["source"].str.startswith("tn292")].set_index("weight type")
    assert course.at["Wq", "r=64"] == "83.2"


def test_table5_takes_the_equal_budget_cells_beside_the_paper(runs):
    write(runs, "t6-qv-r4", "mnli", "lora", 0, 0.70, ["table6"], targets=["q", "v"], r=4)
    write(runs, "t5-v-r8", "mnli", "lora", 0, 0.66, ["table5"], targets=["v"], r=8)
    t5 = tables.table5(tables.load_records(runs)).set_index("weight_type")
    assert set(t5.index) == {"Wq", "Wv", "Wq,Wv"}  # r·(number of types) = 8; Wq,Wv r = 8 is not
    assert t5.at["Wq,Wv", "r"] == 4 and t5.at["Wq,Wv", "mean"] == pytest.approx(70.0)
    assert t5.at["Wq", "paper"] == 91.0 and t5.at["Wv", "paper"] == 91.0  # GPT-3, MultiNLI


def _with_outputs(runs, run_id, task, method, seed, preds, labels, tags=("table2",), metric="accuracy", **extra):
    write(runs, run_id, task, method, seed, 0.0, list(tags))
    path = runs / run_id / "record.json"
    record = json.loads(path.read_text())
    record.update(primary_metric=metric, best_outputs={"validation": {"predictions": preds, "labels": labels}},
                  **extra)
    path.write_text(json.dumps(record))


def test_trivial_baselines_and_learned_tasks(tmp_path):
    labels = [1] * 70 + [0] * 30
    for seed in range(3):
        _with_outputs(tmp_path, f"t2-sst2-full-s{seed}", "sst2", "full", seed, labels, labels)  # perfect
        _with_outputs(tmp_path, f"t2-mrpc-full-s{seed}", "mrpc", "full", seed, [1] * 100, labels)  # majority
    df = tables.load_records(tmp_path)
    df.loc[df["task"] == "sst2", "best_metric"] = 1.0
    df.loc[df["task"] == "mrpc", "best_metric"] = 0.7
    base = tables.baselines(df).set_index("task")
    assert base.at["SST-2", "trivial baseline"] == pytest.approx(70.0)  # majority class
    assert base.at["SST-2", "FT learned it"] == "yes" and base.at["MRPC", "FT learned it"] == "no"  # +30 vs +0


def test_claims_summary_quotes_intervals_and_verdicts(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 600).tolist()
    good = [l if rng.random() < 0.9 else 1 - l for l in labels]
    for seed in range(3):
        _with_outputs(tmp_path, f"t2-sst2-lora-s{seed}", "sst2", "lora", seed, good, labels)
        _with_outputs(tmp_path, f"t2-sst2-full-s{seed}", "sst2", "full", seed, good, labels)
    df = tables.load_records(tmp_path)
    from lora_nb import claims

    comparisons = claims.decide(df)
    summary = findings.claims_summary(comparisons, df).set_index("claim")
    assert summary.at["C1", "verdict"] == "reproduced"  # identical predictions: difference 0 ± 0
    assert "SST-2: LoRA − FT = 0.0 [0.0, 0.0]" in summary.at["C1", "ours: difference [95% interval], points"]
    assert summary.at["C3", "ours: difference [95% interval], points"] == "not run"
    assert "95.1" in summary.at["C1", "paper"] or "LoRA" in summary.at["C1", "paper"]
    text = findings.summary_text(df, comparisons)
    # C2–C6 have no runs on one side: nothing was tested
    assert "1 is reproduced, 0 inconclusive" in text and "4 not testable" in text


def test_deviations_state_ours_from_the_records(runs):
    dev = findings.deviations(tables.load_records(runs)).set_index("setting")
    assert dev.at["max sequence length", "ours"] == "128" and dev.at["max sequence length", "paper (RoBERTa-base, Table 9)"] == "512"
    assert "SST-2 512" in dev.at["training examples", "ours"]


def test_deviations_count_each_precision_and_say_why_they_mix(runs):
    df = tables.load_records(runs)
    df = df[tables.completed(df) & df["tags"].map(lambda t: "budget" not in t)].copy()  # the table's runs
    df["mixed_precision"] = ["bf16"] * (len(df) - 2) + ["no", "no"]
    text = findings.deviations(df).set_index("setting").at["arithmetic", "ours"]
    assert text.startswith(f"bf16 autocast (fp32 master weights): {len(df) - 2} runs; fp32: 2 runs (")
    assert "only on a CPU with bf16" in text
    df["mixed_precision"] = "no"
    assert findings.deviations(df).set_index("setting").at["arithmetic", "ours"] == f"fp32: {len(df)} runs"


# --------------------------------------------------------------------------- figures (lora_nb.plots)


def _legend_texts(legend) -> list[str]:
    return [t.get_text() for t in legend.get_texts()]


def test_table2_figure_mean_seed_range_fixed_method_order_set_apart(runs, tmp_path):
    from matplotlib.collections import LineCollection

    from lora_nb import plots

    for seed, score in enumerate([0.6, 0.7, 0.65]):  # written after LoRA and FT, shown after them
        write(runs, f"t2-sst2-head-s{seed}", "sst2", "head", seed, score, ["table2"], trainable=100)
        write(runs, f"t2-sst2-bitfit-s{seed}", "sst2", "bitfit", seed, score + 0.1, ["table2"], trainable=300)
    fig = plots.accuracy_vs_parameters(tables.load_records(runs), tmp_path / "t2")
    assert _legend_texts(fig.legends[0]) == ["LoRA", "FT", "BitFit", "Head only", "one seed"]
    ax = fig.axes[0]
    assert ax.get_title() == "SST-2 (accuracy)" and ax.get_xlabel() == "" and ax.get_ylabel() == ""  # shared labels
    assert fig.supxlabel is not None and "trainable parameters" in fig._supxlabel.get_text()
    # LoRA: the median point (85) with a bar from the lowest to the highest seed (80 to 90).
    lora_color = plots.METHOD_COLORS["lora"]
    medians = [line for line in ax.lines if line.get_marker() == "o" and line.get_color() == lora_color]
    assert [list(line.get_ydata()) for line in medians] == [[85.0]]
    bars = [c for c in ax.collections if isinstance(c, LineCollection)
            and tuple(c.get_color()[0][:3]) == tuple(lora_color)]
    assert sorted(bars[0].get_segments()[0][:, 1]) == [80.0, 90.0]
    # FT's point is the mean of 70, 75, 90 (the tables' statistic), not their median 75
    ft = [line for line in ax.lines if line.get_color() == plots.METHOD_COLORS["full"] and line.get_marker() == "s"]
    assert [pytest.approx(v) for v in ft[0].get_ydata()] == [235 / 3]
    # LoRA (1,100 trainable) and an adapter at 1,000 would overlap: LoRA is set apart along x
    for seed in range(3):
        write(runs, f"t2-sst2-houlsby-s{seed}", "sst2", "houlsby", seed, 0.8, ["table2"], trainable=1000)
    fig = plots.accuracy_vs_parameters(tables.load_records(runs))
    xs = {c: line.get_xdata()[0] for line in fig.axes[0].lines for c in ("lora", "houlsby")
          if line.get_color() == plots.METHOD_COLORS[c] and line.get_marker() == plots.METHOD_MARKERS[c]}
    assert xs["lora"] >= 1.6 * xs["houlsby"]
    assert (tmp_path / "t2.png").stat().st_size > 0 and (tmp_path / "t2.svg").stat().st_size > 0


def test_table6_figure_legend_in_the_papers_order(runs):
    from lora_nb import plots

    fig = plots.rank_curves(tables.table6(tables.load_records(runs)), "m")
    assert _legend_texts(fig.legends[0]) == ["Wq", "Wq,Wv", "Wq,Wk,Wv,Wo"]
    assert [ax.get_title() for ax in fig.axes] == ["ours (m)", "paper (GPT-3 175B)"]


def test_claims_forest_rows_lines_and_colours():
    from lora_nb import claims, plots

    comparisons = pd.DataFrame([
        {"claim": "C1", "task": "sst2", "a": "LoRA", "b": "FT", "kind": "noninferior", "difference": -1.0,
         "lo": -3.0, "hi": 1.0, "verdict": claims.INCONCLUSIVE},
        {"claim": "C2", "task": "sst2", "a": "BitFit", "b": "Head only", "kind": "superior", "difference": 6.0,
         "lo": 2.0, "hi": 9.0, "verdict": claims.REPRODUCED},
        {"claim": "C3", "task": "mnli", "a": "Wq,Wv r=1", "b": "Wq,Wv r=64", "kind": "noninferior",
         "difference": -7.0, "lo": -9.0, "hi": -4.0, "verdict": claims.NOT_REPRODUCED}])
    fig = plots.claims_forest(comparisons)
    axes = fig.axes
    assert [ax.get_title(loc="left") for ax in axes] == ["C1", "C2", "C3"]  # one panel per claim
    assert [[t.get_text() for t in ax.get_yticklabels()] for ax in axes] == [
        ["SST-2: LoRA − FT"], ["SST-2: BitFit − Head only"], ["MNLI: Wq,Wv r=1 − Wq,Wv r=64"]]
    intervals = {tuple(line.get_xdata()): line.get_color() for ax in axes for line in ax.lines
                 if len(line.get_xdata()) == 2 and line.get_xdata()[0] != line.get_xdata()[1]}
    assert intervals == {(-3.0, 1.0): plots.VERDICT_COLORS[claims.INCONCLUSIVE],
                         (2.0, 9.0): plots.VERDICT_COLORS[claims.REPRODUCED],
                         (-9.0, -4.0): plots.VERDICT_COLORS[claims.NOT_REPRODUCED]}
    verticals = lambda ax: sorted(line.get_xdata()[0] for line in ax.lines
                                  if len(line.get_xdata()) == 2 and line.get_xdata()[0] == line.get_xdata()[1])
    assert verticals(axes[0]) == [-claims.MARGIN, 0.0] and verticals(axes[1]) == [0.0]  # δ only where tested
    # each panel on its own scale: C3's far interval does not stretch C1's
    assert axes[0].get_xlim()[0] > -5 and axes[2].get_xlim()[0] < -8
    only_superior = plots.claims_forest(comparisons[comparisons["kind"] == "superior"])
    assert [line.get_xdata()[0] for line in only_superior.axes[0].lines if line.get_linestyle() == "--"] == []
    empty = plots.claims_forest(comparisons.iloc[0:0])
    assert "no comparison" in empty.axes[0].texts[0].get_text()


def test_heatmap_colour_bar_and_amplification_legend():
    from lora_nb import plots

    sim = pd.DataFrame([{"layer": layer, "weight_type": wt, "i": i, "j": j, "phi": 0.5, "seed_a": 0, "seed_b": 1}
                        for layer in (0, 1) for wt in ("v", "q") for i in range(1, 5) for j in range(1, 9)])
    fig = plots.similarity_heatmaps(sim, "Figure 3")
    colorbar = fig.axes[-1]
    assert colorbar.get_ylabel() == "φ(i, j)"
    assert [ax.get_title() for ax in fig.axes[:4]] == ["ΔWq, layer 0", "ΔWq, layer 1", "ΔWv, layer 0", "ΔWv, layer 1"]
    amp = pd.DataFrame([{"layer": layer, "r": r, "seed": seed, "amplification": 10.0 / r}
                        for layer in range(3) for r in (1, 8, 64) for seed in (0, 1)])
    fig = plots.amplification_plot(amp)
    legend = fig.axes[0].get_legend()
    assert _legend_texts(legend) == ["r = 1", "r = 8", "r = 64"]  # ranks as categories
    assert len({tuple(line.get_color()) for line in fig.axes[0].lines}) == 3
    box = legend.get_window_extent(fig.canvas.get_renderer())
    assert box.x0 > fig.axes[0].get_window_extent().x1  # outside the axes


def test_reproduced_matches_runs_by_settings_and_compares_predictions(tmp_path):
    """`python -m lora_nb.results RUNS --same-as REFERENCE`: runs are matched by their settings
    (not their names), and must give the same best score and predictions."""
    outputs = {"validation": {"predictions": [1, 0], "labels": [1, 1]}}
    for folder, name, value in (("ref", "t6-mnli-q-r8-s0", 0.5), ("new", "t5-mnli-q-r8-s0", 0.5),
                                ("ref", "t2-sst2-lora-s0", 0.8), ("new", "t2-sst2-lora-s0", 0.9)):
        write(tmp_path / folder, name, name.split("-")[1], "lora", 0, value, ["x"],
              targets=["q"] if "q-r8" in name else ["q", "v"], extra={"best_outputs": outputs})
    report = results.reproduced(tmp_path / "new", tmp_path / "ref")
    assert report.splitlines() == ["t2-sst2-lora-s0: best 0.9 against 0.8",
                                   "1 of 2 runs made with the reference's settings reproduce its best "
                                   "score and every validation prediction"]


def test_the_convergence_study_figure_draws_each_rate_the_rule_window_and_the_baseline(tmp_path):
    from lora_nb import plots

    labels = [1] * 60 + [0] * 40
    for method, rates in (("lora", (3e-4, 1e-3, 3e-3)), ("full", (2e-5, 5e-5, 1e-4))):
        for i, rate in enumerate(rates):
            climbing = i == 0  # the lowest rate still gains in the last quarter
            curve = [0.5 + (0.04 * k if climbing else 0.2 * (1 - 0.5 ** k)) for k in range(1, 9)]
            evaluations = [{"step": 50 * k, "primary": v, "eval": {"validation": {"accuracy": v},
                                                                   "dev": {"accuracy": v}}}
                           for k, v in enumerate(curve, 1)]
            _with_outputs(tmp_path, f"t2-sst2-{method}-lr{rate:g}-s0", "sst2", method, 0, labels, labels,
                          learning_rate=rate, evaluations=evaluations, optimizer_steps=400)
            path = tmp_path / f"t2-sst2-{method}-lr{rate:g}-s0" / "record.json"
            record = json.loads(path.read_text())
            record["config"]["learning_rate"] = rate
            path.write_text(json.dumps(record))
    df = tables.load_records(tmp_path)
    curves = tables.study_curves(df)
    assert len(curves) == 6 * 8 and set(curves["budget"]) == {400}
    assert set(curves[~curves["converged"]]["learning_rate"]) == {3e-4, 2e-5}
    budgets = tables.study_budgets(curves)
    assert budgets.to_dict("records") == [{
        "task": "SST-2", "budget (steps)": 400,
        "LoRA converged": "2 of 3", "LoRA best run peaks at": "step 400 (lr 0.0003)",
        "FT converged": "2 of 3", "FT best run peaks at": "step 400 (lr 2e-05)"}]
    fig = plots.convergence_study(curves)
    ax = fig.axes[0]
    runs = [line for line in ax.lines if len(line.get_xdata()) == 8]
    assert len(runs) == 6 and sum(line.get_linestyle() == ":" for line in runs) == 2
    assert any(list(line.get_ydata()) == [60.0, 60.0] for line in ax.lines)  # majority class
    assert ax.patches and ax.patches[0].get_x() == pytest.approx(300)  # the last quarter


def _tuning_runs(tmp_path, peaks):
    """SST-2 tuning runs: per (method, rate) a dev curve that levels off at `peaks[...]`."""
    labels = [1] * 60 + [0] * 40
    for (method, rate), peak in peaks.items():
        curve = [peak - 0.1 * 0.5 ** k for k in range(8)]
        evaluations = [{"step": 50 * k, "primary": v, "eval": {"validation": {"accuracy": v},
                                                               "dev": {"accuracy": v}}}
                       for k, v in enumerate(curve, 1)]
        run_id = f"t2-sst2-{method}-lr{rate:g}-s0"
        _with_outputs(tmp_path, run_id, "sst2", method, 0, labels, labels, learning_rate=rate,
                      evaluations=evaluations, optimizer_steps=400)
        path = tmp_path / run_id / "record.json"
        record = json.loads(path.read_text())
        record["config"]["learning_rate"] = rate
        path.write_text(json.dumps(record))
    return tables.load_records(tmp_path)


def test_the_tuning_table_marks_the_rate_chosen_on_dev_and_names_grid_edges(tmp_path):
    from lora_nb import plots

    df = _tuning_runs(tmp_path, {("lora", 3e-4): 0.70, ("lora", 1e-3): 0.80, ("lora", 3e-3): 0.75,
                                 ("full", 2e-5): 0.70, ("full", 5e-5): 0.72, ("full", 1e-4): 0.78})
    tuning = tables.tuning_table(df)
    chosen = tuning[tuning["chosen"]].set_index("method")["learning_rate"]
    assert chosen.to_dict() == {"lora": 1e-3, "full": 1e-4}
    assert tuning.set_index(["method", "learning_rate"]).at[("lora", 1e-3), "dev"] == pytest.approx(80.0, abs=0.1)
    text = findings.grid_edge_text(tuning)
    assert text.startswith("1 of 2 tuned cells") and "SST-2 FT (0.0001, the top)" in text
    display = findings.tuning_display(tuning).set_index("method")
    assert "0.001: 79.9 ★" in display.iloc[:, -1]["LoRA"]
    fig = plots.lr_sensitivity(tuning)
    filled = [line for line in fig.axes[0].lines if line.get_markersize() == 8]
    assert len(filled) == 2  # one chosen rate per method, drawn larger and filled


def test_differences_in_prose_never_read_minus_zero():
    assert findings.signed(-0.04) == "0.0" and findings.signed(-1.26) == "−1.3" and findings.signed(2) == "+2.0"
    shown = findings.comparisons_display(pd.DataFrame({"task": ["sst2"], "lo": [-0.04], "hi": [1.0]}))
    assert str(shown.at[0, "95% low"]) == "0.0"


def test_a_styled_table_renders_the_same_twice_and_aligns_text_left():
    df = pd.DataFrame({"task": ["SST-2"], "score": [91.25]})
    html = findings.styled(df).to_html()
    assert html == findings.styled(df.copy()).to_html()  # no random element ids
    assert "text-align: left" in html


@pytest.mark.slow
def test_a_figure_drawn_in_two_processes_is_byte_identical(tmp_path):
    """A re-render runs in a new kernel: SVG ids must not depend on the process (matplotlib's
    default salt is random per process)."""
    import subprocess
    import sys

    script = ("import sys, pandas as pd; from lora_nb import plots; plots.claims_forest(pd.DataFrame([{"
              "'claim': 'C1', 'task': 'sst2', 'a': 'LoRA', 'b': 'FT', 'kind': 'noninferior', 'difference': -1.0,"
              " 'lo': -3.0, 'hi': 1.0, 'verdict': 'inconclusive'}]), sys.argv[1])")
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / name)], check=True)
    for suffix in (".png", ".svg"):
        assert (tmp_path / f"a{suffix}").read_bytes() == (tmp_path / f"b{suffix}").read_bytes()


def test_the_table2_figure_shows_the_chosen_rate_only(tmp_path):
    from lora_nb import plots

    df = _tuning_runs(tmp_path, {("lora", 3e-4): 0.70, ("lora", 1e-3): 0.80, ("lora", 3e-3): 0.75})
    fig = plots.accuracy_vs_parameters(df)
    from matplotlib.collections import PathCollection

    rings = [c for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    assert sum(len(c.get_offsets()) for c in rings) == 1  # one seed at the chosen rate, not three rates
