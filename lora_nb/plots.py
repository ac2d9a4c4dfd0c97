"""seaborn figures for the report: Table 6 as curves, Table 2 as accuracy vs parameters,
training curves. Each function returns the figure and, given `path`, saves PNG and SVG."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .results import METHOD_LABELS, REFERENCE_DIR, TASK_LABELS

sns.set_theme(context="notebook", style="whitegrid")
plt.rcParams["svg.hashsalt"] = "lora-nb"  # the same figure gives the same SVG, run after run


def _save(fig: plt.Figure, path: str | os.PathLike | None) -> plt.Figure:
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path.with_suffix(".png"), dpi=130, bbox_inches="tight", metadata={"Software": None})
        fig.savefig(path.with_suffix(".svg"), bbox_inches="tight", metadata={"Date": None})
    return fig


def rank_curves(t6: pd.DataFrame, model: str, path=None) -> plt.Figure:
    """Table 6 as curves: validation accuracy vs rank r per weight type, ours beside the paper's
    GPT-3 MultiNLI numbers (different model and scale: compare shapes, not levels)."""
    ours = t6.assign(source=f"ours ({model})", accuracy=t6["median"])[["source", "weight_type", "r", "accuracy"]]
    paper = pd.read_csv(REFERENCE_DIR / "paper_table6_gpt3.csv")
    paper = paper[paper["dataset"] == "MultiNLI"].melt(
        id_vars="weight_type", value_vars=["r1", "r2", "r4", "r8", "r64"], var_name="r", value_name="accuracy")
    paper = paper.assign(r=paper["r"].str[1:].astype(int), source="paper (GPT-3 175B)")
    data = pd.concat([ours, paper], ignore_index=True)
    grid = sns.relplot(data=data, x="r", y="accuracy", hue="weight_type", style="weight_type",
                       col="source", kind="line", markers=True, dashes=False,
                       facet_kws={"sharey": False}, height=3.6, aspect=1.1)
    for ax in grid.axes.flat:
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 2, 4, 8, 16, 32, 64], labels=["1", "2", "4", "8", "16", "32", "64"])
        ax.set_xlabel("rank r (log scale)")
        ax.set_ylabel("MNLI validation accuracy (%)")
    grid.set_titles("{col_name}")
    grid.legend.set_title("weight type")
    grid.figure.suptitle("Table 6: accuracy vs rank r", y=1.03)
    return _save(grid.figure, path)


def accuracy_vs_parameters(df: pd.DataFrame, path=None) -> plt.Figure:
    """Table 2 runs: best-epoch metric vs trainable parameters (head included, log scale), one
    panel per task, one colour per method; every seed is a point."""
    runs = df[(df["status"] == "completed") & df["tags"].map(lambda t: "table2" in t)].copy()
    runs["score"] = runs["best_metric"] * 100
    runs["method"] = runs["method"].map(METHOD_LABELS)
    runs["task"] = runs["task"].map(TASK_LABELS)
    grid = sns.relplot(data=runs, x="trainable", y="score", hue="method", style="method",
                       col="task", col_wrap=4, s=70, height=3.0, aspect=1.0,
                       facet_kws={"sharey": False})
    for ax in grid.axes.flat:
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters (with head, log)")
        ax.set_ylabel("best-epoch metric (×100)")
    grid.set_titles("{col_name}")
    grid.figure.suptitle("Table 2: score vs trainable parameters", y=1.03)
    return _save(grid.figure, path)


def training_curves(df: pd.DataFrame, path=None) -> plt.Figure:
    """Training loss vs step for the Table 2 runs of the first seed, per task and method."""
    runs = df[(df["status"] == "completed") & df["tags"].map(lambda t: "table2" in t)]
    runs = runs[runs["seed"] == runs["seed"].min()]
    rows = [{"task": TASK_LABELS[r.task], "method": METHOD_LABELS[r.method], "step": s, "loss": l}
            for r in runs.itertuples() for s, l in r.loss_curve]
    grid = sns.relplot(data=pd.DataFrame(rows), x="step", y="loss", hue="method", col="task",
                       col_wrap=4, kind="line", height=3.0, aspect=1.1,
                       facet_kws={"sharey": False, "sharex": False})
    grid.set_axis_labels("optimizer step", "training loss")
    grid.set_titles("{col_name}")
    grid.figure.suptitle("Training curves (first seed)", y=1.03)
    return _save(grid.figure, path)


def run_curve(record: dict, path=None) -> plt.Figure:
    """One run: training loss per step and the validation metric per epoch."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    curve = pd.DataFrame(record.get("loss_curve", []), columns=["step", "loss"])
    sns.lineplot(data=curve, x="step", y="loss", ax=ax1)
    ax1.set(xlabel="optimizer step", ylabel="training loss", title="training loss")
    epochs = pd.DataFrame([{"epoch": e["epoch"], "metric": e["primary"] * 100} for e in record["epochs"]])
    sns.lineplot(data=epochs, x="epoch", y="metric", marker="o", ax=ax2)
    ax2.set(xlabel="epoch", ylabel=f"{record['primary_metric']} (×100)", title="validation")
    fig.tight_layout()
    return _save(fig, path)


def similarity_heatmaps(sim: pd.DataFrame, title: str, path=None, max_i: int | None = None,
                        max_j: int | None = None) -> plt.Figure:
    """φ(i, j) heat maps (paper Figures 3–4): one row per weight type, one column per layer."""
    sim = sim[(sim["i"] <= (max_i or sim["i"].max())) & (sim["j"] <= (max_j or sim["j"].max()))]
    types, layers = sorted(sim["weight_type"].unique()), sorted(sim["layer"].unique())
    fig, axes = plt.subplots(len(types), len(layers), figsize=(1.9 * len(layers) + 1, 2.0 * len(types) + 0.6),
                             squeeze=False, sharex=True, sharey=True)
    for a, wt in enumerate(types):
        for b, layer in enumerate(layers):
            cell = sim[(sim["weight_type"] == wt) & (sim["layer"] == layer)]
            grid = cell.pivot(index="i", columns="j", values="phi")
            sns.heatmap(grid, ax=axes[a, b], vmin=0, vmax=1, cmap="viridis", cbar=(b == len(layers) - 1),
                        xticklabels=max(1, grid.shape[1] // 4), yticklabels=max(1, grid.shape[0] // 4))
            axes[a, b].set_title(f"ΔW{wt}, layer {layer}", fontsize=9)
            axes[a, b].set_xlabel("j" if a == len(types) - 1 else "")
            axes[a, b].set_ylabel("i" if b == 0 else "")
    fig.suptitle(title, y=1.0)
    fig.tight_layout()
    return _save(fig, path)


def amplification_plot(amp: pd.DataFrame, path=None) -> plt.Figure:
    """Amplification factor ‖ΔW‖_F / ‖UᵀWV‖_F per layer and rank (paper Table 7)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    sns.lineplot(data=amp, x="layer", y="amplification", hue="r", marker="o", palette="crest", ax=ax)
    ax.set(xlabel="layer", ylabel="amplification factor", yscale="log",
           title="Table 7: amplification of ΔWq by layer and rank")
    ax.legend(title="rank r")
    fig.tight_layout()
    return _save(fig, path)
