"""seaborn / matplotlib figures for the report: Table 2 as score vs parameters, Table 6 as curves,
training and learning curves, the claims as a forest plot, and the §7 figures (φ heat maps,
Table 7's amplification). Each function returns the figure and, given `path`, saves PNG and SVG.

Methods, weight types and verdicts keep one order and one colour in every figure.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .claims import INCONCLUSIVE, MARGIN, NOT_REPRODUCED, NOT_TESTABLE, REPRODUCED, best_learning_rate
from .paper import reference_table
from .tables import METHOD_LABELS, TASK_LABELS, completed

sns.set_theme(context="notebook", style="whitegrid")
plt.rcParams["svg.hashsalt"] = "lora-nb"  # the same figure gives the same SVG, run after run

METHOD_ORDER = ["lora", "full", "bitfit", "head", "houlsby", "pfeiffer"]
METHOD_COLORS = dict(zip(METHOD_ORDER, sns.color_palette("colorblind", len(METHOD_ORDER))))
METHOD_MARKERS = dict(zip(METHOD_ORDER, ["o", "s", "D", "v", "^", "P"]))
WEIGHT_TYPE_ORDER = ["Wq", "Wq,Wv", "Wq,Wk,Wv,Wo"]  # the paper's Table 6 order
WEIGHT_TYPE_COLORS = dict(zip(WEIGHT_TYPE_ORDER, [sns.color_palette("colorblind")[i] for i in (0, 3, 2)]))
VERDICT_COLORS = {REPRODUCED: "#1a9850", NOT_REPRODUCED: "#d73027", INCONCLUSIVE: "#7f7f7f",
                  NOT_TESTABLE: "#8073ac"}


# matplotlib salts SVG element ids with a random uuid per process unless told otherwise.
plt.rcParams["svg.hashsalt"] = SVG_SALT = "lora-nb"


def save_figure(fig: plt.Figure, path: str | os.PathLike | None) -> plt.Figure:
    """The figure as PNG and SVG beside each other, byte-identical when drawn again from the same
    data: no date or software stamp, and SVG element ids from a fixed salt (`SVG_SALT`)."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path.with_suffix(".png"), dpi=130, bbox_inches="tight", metadata={"Software": None})
        fig.savefig(path.with_suffix(".svg"), bbox_inches="tight", metadata={"Date": None})
    return fig


def _empty(title: str, message: str, path=None) -> plt.Figure:
    """A figure that says why there is nothing to draw, in the figure's place."""
    fig, ax = plt.subplots(figsize=(6.5, 1.4), layout="constrained")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=10, color="0.3")
    ax.set_axis_off()
    ax.set_title(title)
    return save_figure(fig, path)


def _grid(n: int, ncols: int, width: float, height: float, **kw):
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols + 1.6, height * nrows + 0.9),
                             squeeze=False, layout="constrained", **kw)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _params(x: float, _pos=None) -> str:
    """Parameter counts as Table 2 writes them: 0.1M, 1M, 10M."""
    if x <= 0:
        return "0"
    m = x / 1e6
    return f"{m:g}M" if m >= 0.01 else f"{x / 1e3:g}k"


def _order(values, order: list[str]) -> list[str]:
    present = list(dict.fromkeys(values))
    return [v for v in order if v in present] + [v for v in present if v not in order]


def accuracy_vs_parameters(df: pd.DataFrame, path=None) -> plt.Figure:
    """Table 2 runs: best validation score vs trainable parameters (head included, log scale),
    one panel per task. Each method (fixed order, colour and marker: LoRA, FT, BitFit, Head only,
    AdptH, AdptP) is its mean over seeds (the tables' statistic), with a bar over the seeds'
    range; seeds are small rings beside it. Methods whose counts lie within ×1.6 of each other
    (LoRA, BitFit and the adapters at ~0.2M) are set apart along x in that order, so that none
    hides another: their x positions are then approximate (the counts are in Table 2)."""
    runs = df[completed(df) & df["tags"].map(lambda t: "table2" in t)].copy()
    if runs.empty:
        return _empty("Table 2: score vs trainable parameters", "no completed Table 2 runs", path)
    runs["score"] = runs["best_metric"] * 100
    tasks = _order(runs["task"], list(TASK_LABELS))
    methods = _order(runs["method"], METHOD_ORDER)
    fig, axes = _grid(len(tasks), 4, 2.9, 2.6, sharex=True)
    for ax, task in zip(axes, tasks):
        sub = runs[runs["task"] == task]
        present = [m for m in methods if (sub["method"] == m).any()]
        placed: list[float] = []
        for method in sorted(present, key=lambda m: sub[sub["method"] == m]["trainable"].median()):
            m = best_learning_rate(sub[sub["method"] == method])  # the chosen rate's seeds, as Table 2
            x, color, marker = m["trainable"].median(), METHOD_COLORS.get(method), METHOD_MARKERS.get(method, "o")
            if placed and x < placed[-1] * 1.6:  # too close to the previous method: set apart
                x = placed[-1] * 1.6
            placed.append(x)
            mean = m["score"].mean()
            ax.errorbar([x], [mean], yerr=[[mean - m["score"].min()], [m["score"].max() - mean]], fmt=marker,
                        color=color, markersize=7, capsize=3, elinewidth=1.0, markeredgecolor="white", zorder=3)
            # the seeds, a little to the right of their method's bar
            ax.scatter(np.full(len(m), x * 1.2), m["score"], s=16, facecolors="none", edgecolors=color,
                       linewidths=0.9, zorder=4)
        metric = sub["primary_metric"].iloc[0] if "primary_metric" in sub and len(sub) else ""
        ax.set_title(f"{TASK_LABELS.get(task, task)} ({metric.replace('_', ' ')})" if metric
                     else TASK_LABELS.get(task, task), fontsize=10)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, numticks=12))
        ax.xaxis.set_major_formatter(FuncFormatter(_params))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(labelsize=9)
        ax.margins(x=0.25, y=0.12)
        low, high = ax.get_ylim()
        if high - low < 1.0:  # a panel of near-equal scores: at least one point of scale, no offset
            mid = (low + high) / 2
            ax.set_ylim(mid - 0.5, mid + 0.5)
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    fig.supxlabel("trainable parameters, head included (log scale)", fontsize=10)
    fig.supylabel("best validation score (metric × 100)", fontsize=10)
    handles = [Line2D([], [], color=METHOD_COLORS.get(m), marker=METHOD_MARKERS.get(m, "o"), linestyle="",
                      markersize=7, label=METHOD_LABELS.get(m, m)) for m in methods]
    handles.append(Line2D([], [], color="0.4", marker="o", markersize=4, markerfacecolor="none", linestyle="",
                          label="one seed"))
    fig.legend(handles=handles, loc="outside right upper", title="mean, bar: seed range", fontsize=9,
               title_fontsize=9, frameon=False)
    fig.suptitle("Table 2: score vs trainable parameters")
    return save_figure(fig, path)


def rank_curves(t6: pd.DataFrame, model: str, path=None) -> plt.Figure:
    """Table 6 as curves: validation accuracy vs rank r per weight type (the paper's order: Wq;
    Wq,Wv; Wq,Wk,Wv,Wo), ours (mean over seeds, bar ± one std) beside the paper's GPT-3
    MultiNLI numbers (different model and scale: compare shapes, not levels)."""
    paper = reference_table("table6")
    paper = paper[paper["dataset"] == "MultiNLI"].melt(
        id_vars="weight_type", value_vars=["r1", "r2", "r4", "r8", "r64"], var_name="r", value_name="mean")
    paper = paper.assign(r=paper["r"].str[1:].astype(int), std=np.nan)
    panels = [(f"ours ({model})", t6), ("paper (GPT-3 175B)", paper)]
    fig, axes = plt.subplots(1, 2, figsize=(8.6, 3.4), layout="constrained")
    types = _order(list(t6["weight_type"]) + list(paper["weight_type"]), WEIGHT_TYPE_ORDER)
    for ax, (name, data) in zip(axes, panels):
        for wt in types:
            d = data[data["weight_type"] == wt].sort_values("r")
            if d.empty:
                continue
            yerr = d["std"].to_numpy() if "std" in d and d["std"].notna().any() else None
            ax.errorbar(d["r"], d["mean"], yerr=yerr, marker="o", capsize=3, label=wt,
                        color=WEIGHT_TYPE_COLORS.get(wt))
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 2, 4, 8, 16, 32, 64], labels=["1", "2", "4", "8", "16", "32", "64"])
        ax.minorticks_off()
        ax.set(title=name, xlabel="rank r (log scale)")
    axes[0].set_ylabel("MNLI validation accuracy (%)")
    handles = [Line2D([], [], color=WEIGHT_TYPE_COLORS.get(wt), marker="o", label=wt) for wt in types]
    fig.legend(handles=handles, loc="outside right upper", title="weight type", frameon=False)
    fig.supxlabel("ours: mean over seeds, bars ± one standard deviation over seeds; "
                  "the paper gives one number per cell (±0.1 over seeds)", fontsize=8.5, color="0.3")
    fig.suptitle("Table 6: accuracy vs rank r")
    return save_figure(fig, path)


def _lr(lr: float) -> str:
    """5e-3, not 0.005."""
    mantissa, exponent = f"{lr:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _shades(color, n: int) -> list:
    """n shades of one colour, dark to light (the learning rates of one method)."""
    c = np.asarray(color[:3], dtype=float)
    if n == 1:
        return [tuple(c)]
    dark, light = 0.7 * c, c + 0.5 * (1 - c)
    return [tuple(dark + t * (light - dark)) for t in np.linspace(0, 1, n)]


def convergence_study(curves: pd.DataFrame, path=None) -> plt.Figure:
    """The convergence study (`lora_nb.tables.study_curves`): dev score by optimizer step, one
    panel per task, FT and LoRA at each rate of their grids (a shade per rate; dotted where the
    run did not converge); the shaded band is the last quarter of the budget, where the
    convergence rule asks for a gain below one standard error of the dev score (at least half a
    point); the dashed grey line is the
    trivial baseline (majority class on validation, 0 for correlations)."""
    title = "Convergence study: dev score by optimizer step"
    if curves.empty:
        return _empty(title, "no convergence-study runs", path)
    tasks = _order(curves["task"], list(TASK_LABELS))
    fig, axes = _grid(len(tasks), 3, 3.6, 2.8)
    handles: dict[str, Line2D] = {}
    for ax, task in zip(axes, tasks):
        sub = curves[curves["task"] == task]
        budget = sub["budget"].max()
        ax.axvspan(0.75 * budget, budget, color="0.85", alpha=0.6, lw=0, zorder=0)
        for method in _order(sub["method"], METHOD_ORDER):
            rates = sorted(sub[sub["method"] == method]["learning_rate"].unique())
            for rate, color in zip(rates, _shades(METHOD_COLORS.get(method, (0.3, 0.3, 0.3)), len(rates))):
                g = sub[(sub["method"] == method) & (sub["learning_rate"] == rate)].sort_values("step")
                style = "-" if g["converged"].all() else ":"
                ax.plot(g["step"], g["dev"], color=color, linestyle=style, lw=1.5, marker=".", ms=4)
                label = f"{METHOD_LABELS.get(method, method)}, lr {_lr(rate)}"
                handles.setdefault(label, Line2D([], [], color=color, lw=2, label=label))
        trivial = sub["trivial"].dropna()
        if len(trivial):
            ax.axhline(trivial.median(), color="0.5", linestyle="--", lw=1.2, zorder=1)
        ax.set_title(f"{TASK_LABELS.get(task, task)} (budget {budget:,} steps)", fontsize=10)
        ax.tick_params(labelsize=9)
    fig.supxlabel("optimizer step (batch 16)", fontsize=10)
    fig.supylabel("dev score (metric × 100)", fontsize=10)
    extra = [Line2D([], [], color="0.3", linestyle=":", label="did not converge"),
             Line2D([], [], color="0.5", linestyle="--", label="trivial baseline"),
             plt.Rectangle((0, 0), 1, 1, color="0.85", label="last quarter (the rule's window)")]
    fig.legend(handles=list(handles.values()) + extra, loc="outside right upper", frameon=False, fontsize=9)
    fig.suptitle(title)
    return save_figure(fig, path)


def lr_sensitivity(tuning: pd.DataFrame, path=None) -> plt.Figure:
    """How sensitive each method is to its learning rate (`lora_nb.tables.tuning_table`): best
    dev score against the rate, one panel per task, a line per method over its grid; the chosen
    rate is filled, a run that did not converge is drawn hollow with a cross."""
    title = "Learning-rate sensitivity: best dev score at each rate of each method's grid"
    if tuning.empty:
        return _empty(title, "no tuning runs", path)
    tasks = _order(tuning["task"], list(TASK_LABELS))
    fig, axes = _grid(len(tasks), 3, 3.6, 2.8)
    for ax, task in zip(axes, tasks):
        sub = tuning[tuning["task"] == task]
        for method in _order(sub["method"], METHOD_ORDER):
            g = sub[sub["method"] == method].sort_values("learning_rate")
            color, marker = METHOD_COLORS.get(method, "0.3"), METHOD_MARKERS.get(method, "o")
            ax.plot(g["learning_rate"], g["dev"], color=color, lw=1.5, label=METHOD_LABELS.get(method, method))
            for r in g.itertuples():
                ax.plot(r.learning_rate, r.dev, marker=marker, ms=8 if r.chosen else 6, color=color,
                        markerfacecolor=color if r.chosen else "white", markeredgewidth=1.5)
                if not r.converged:
                    ax.plot(r.learning_rate, r.dev, marker="x", ms=5, color=color)
        ax.set_xscale("log")
        ax.set_xlim(tuning["learning_rate"].min() / 2, tuning["learning_rate"].max() * 2)
        ax.xaxis.set_major_locator(LogLocator(base=10))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(TASK_LABELS.get(task, task), fontsize=10)
        ax.tick_params(labelsize=9)
    fig.supxlabel("learning rate (log scale)", fontsize=10)
    fig.supylabel("best dev score (metric × 100)", fontsize=10)
    handles = [Line2D([], [], color=METHOD_COLORS.get(m, "0.3"), marker=METHOD_MARKERS.get(m, "o"), lw=1.5,
                      label=METHOD_LABELS.get(m, m)) for m in _order(tuning["method"], METHOD_ORDER)]
    handles += [Line2D([], [], color="0.3", marker="o", lw=0, label="chosen rate (filled)"),
                Line2D([], [], color="0.3", marker="o", markerfacecolor="white", lw=0, label="other rates"),
                Line2D([], [], color="0.3", marker="x", lw=0, label="did not converge")]
    fig.legend(handles=handles, loc="outside right upper", frameon=False, fontsize=9)
    fig.suptitle(title)
    return save_figure(fig, path)


def claims_forest(comparisons: pd.DataFrame, path=None, title: str = "The paper's claims: A − B with 95% intervals",
                  xlabel: str = "A − B (points of the metric × 100)") -> plt.Figure:
    """A forest plot of the claims table (`lora_nb.claims.decide`): one panel per claim, each on
    its own scale (a wide context row cannot squeeze a decisive interval); one row per
    comparison, the point is the difference A − B, the bar its 95% interval, the colour its
    verdict. Vertical lines at 0 and, in a panel with a non-inferiority or equivalence test, at
    −δ (and +δ for equivalence; `lora_nb.claims.MARGIN`)."""
    rows = comparisons.reset_index(drop=True)
    if rows.empty:  # e.g. records without per-example predictions
        return _empty(title, "no comparison: the records hold no per-example predictions", path)
    groups = [(claim, rows[rows["claim"] == claim]) for claim in dict.fromkeys(rows["claim"])]
    label = lambda r: f"{TASK_LABELS.get(r.task, r.task)}: {r.a} − {r.b}"
    longest = max(len(label(r)) for r in rows.itertuples())
    heights = [len(g) + 1.2 for _, g in groups]
    fig, axes = plt.subplots(len(groups), 1, figsize=(5.5 + 0.062 * longest, 0.36 * sum(heights) + 1.2),
                             gridspec_kw={"height_ratios": heights}, layout="constrained", squeeze=False)
    lines: dict[str, Line2D] = {"0": Line2D([], [], color="0.2", lw=1, label="no difference")}
    for ax, (claim, g) in zip(axes[:, 0], groups):
        y = np.arange(len(g))[::-1]
        for yi, r in zip(y, g.itertuples()):
            color = VERDICT_COLORS.get(r.verdict, "0.3")
            ax.plot([r.lo, r.hi], [yi, yi], color=color, lw=2.2, solid_capstyle="butt")
            ax.plot([r.difference], [yi], "o", color=color, markersize=6, markeredgecolor="white")
        ax.axvline(0, color="0.2", lw=1)
        kinds = set(g["kind"])
        if kinds & {"noninferior", "equivalent"}:
            ax.axvline(-MARGIN, color="0.35", lw=1, linestyle="--")
            lines["δ"] = Line2D([], [], color="0.35", lw=1, linestyle="--", label=f"±δ = {MARGIN:g} (margin)")
        if "equivalent" in kinds:
            ax.axvline(MARGIN, color="0.35", lw=1, linestyle="--")
        ax.set_yticks(y, labels=[label(r) for r in g.itertuples()], fontsize=8.5)
        ax.set_ylim(-0.7, len(g) - 0.3)
        ax.grid(axis="y", visible=False)
        ax.set_title(claim if claim != "context" else "context (no claim of the paper)", fontsize=10, loc="left")
        ax.tick_params(axis="x", labelsize=8.5)
    axes[-1, 0].set_xlabel(xlabel)
    verdicts = [v for v in VERDICT_COLORS if v in set(rows["verdict"])]
    fig.legend(handles=[Line2D([], [], color=VERDICT_COLORS[v], marker="o", lw=2.2, label=v) for v in verdicts]
               + list(lines.values()), loc="outside right upper", title="verdict", frameon=False,
               fontsize=9, title_fontsize=9)
    axes[-1, 0].xaxis.label.set_size(10)
    fig.suptitle(title, x=0.02, ha="left")
    return save_figure(fig, path)


def run_curve(record: dict, path=None) -> plt.Figure:
    """One run: training loss and the validation metric, per optimizer step."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    curve = pd.DataFrame(record.get("loss_curve", []), columns=["step", "loss"])
    sns.lineplot(data=curve, x="step", y="loss", ax=ax1)
    ax1.set(xlabel="optimizer step", ylabel="training loss", title="training loss")
    evals = pd.DataFrame([{"step": e["step"], "metric": e["primary"] * 100}
                          for e in record.get("evaluations", [])])
    if not evals.empty:
        sns.lineplot(data=evals, x="step", y="metric", marker="o", ax=ax2)
    ax2.set(xlabel="optimizer step", ylabel=f"{record['primary_metric']} (×100)", title="validation")
    fig.tight_layout()
    return save_figure(fig, path)


def _ticks(n: int) -> list[int]:
    """Tick positions (1-based) for an axis of n directions: 1, then multiples of a round step."""
    step = next(s for s in (1, 2, 4, 8, 16, 32) if n / s <= 5)
    return [1] + [t for t in range(step, n + 1, step) if t - 1 >= 0.75 * step]


def similarity_heatmaps(sim: pd.DataFrame, title: str, path=None, max_i: int | None = None,
                        max_j: int | None = None, xlabel: str = "j (top-j directions of the second A)",
                        ylabel: str = "i (top-i directions of the first A)") -> plt.Figure:
    """φ(i, j) heat maps (paper Figures 3–4): one row per weight type, one column per layer, one
    colour bar (φ from 0 to 1). Several seed pairs (columns ``seed_a, seed_b``): their mean."""
    sim = sim[(sim["i"] <= (max_i or sim["i"].max())) & (sim["j"] <= (max_j or sim["j"].max()))]
    sim = sim.groupby(["weight_type", "layer", "i", "j"], as_index=False)["phi"].mean()
    types, layers = _order(sim["weight_type"], ["q", "k", "v", "o"]), sorted(sim["layer"].unique())
    fig, axes = plt.subplots(len(types), len(layers), figsize=(1.75 * len(layers) + 1.4, 1.9 * len(types) + 0.9),
                             squeeze=False, sharex=True, sharey=True, layout="constrained")
    image = None
    for a, wt in enumerate(types):
        for b, layer in enumerate(layers):
            grid = sim[(sim["weight_type"] == wt) & (sim["layer"] == layer)].pivot(index="i", columns="j", values="phi")
            ax = axes[a, b]
            image = ax.imshow(grid.to_numpy(), vmin=0, vmax=1, cmap="viridis", aspect="auto", interpolation="nearest",
                              extent=(0.5, grid.shape[1] + 0.5, grid.shape[0] + 0.5, 0.5))
            ax.set_xticks(_ticks(grid.shape[1]))
            ax.set_yticks(_ticks(grid.shape[0]))
            ax.tick_params(labelsize=8, length=2)
            ax.grid(False)
            ax.set_title(f"ΔW{wt}, layer {layer}", fontsize=9)
    fig.get_layout_engine().set(wspace=0.06, hspace=0.06)
    fig.colorbar(image, ax=axes, shrink=0.9, label="φ(i, j)")
    fig.supxlabel(xlabel, fontsize=10)
    fig.supylabel(ylabel, fontsize=10)
    fig.suptitle(title)
    return save_figure(fig, path)


def amplification_plot(amp: pd.DataFrame, path=None) -> plt.Figure:
    """Amplification factor ‖ΔW‖_F / ‖UᵀWV‖_F per layer, one colour per rank (paper Table 7):
    the median over seeds, with a band over their range."""
    data = amp.assign(rank=[f"r = {int(r)}" for r in amp["r"]])
    ranks = [f"r = {r}" for r in sorted(amp["r"].unique())]
    palette = dict(zip(ranks, sns.color_palette("viridis", len(ranks))))
    fig, ax = plt.subplots(figsize=(6.4, 3.4), layout="constrained")
    for rank in ranks:
        stats = data[data["rank"] == rank].groupby("layer")["amplification"].agg(["median", "min", "max"])
        ax.plot(stats.index, stats["median"], marker="o", color=palette[rank], label=rank)
        if (stats["max"] > stats["min"]).any():
            ax.fill_between(stats.index, stats["min"], stats["max"], color=palette[rank], alpha=0.15, lw=0,
                            label=f"{rank}: range over seeds")
    ax.set(xlabel="layer", ylabel="amplification factor (log scale)", yscale="log",
           title="Table 7: amplification of ΔWq by layer and rank")
    ax.set_xticks(sorted(amp["layer"].unique()))
    ax.legend(title="rank (line: median over seeds)", loc="upper left", bbox_to_anchor=(1.02, 1),
              borderaxespad=0, frameon=False)
    return save_figure(fig, path)
