"""The findings as a page shows them: the tables of `lora_nb.tables` formatted for reading
(Table 2 and 6 wide beside the paper's rows, the learning-rate grids, the comparisons), the text
tables (the claims with the paper's evidence, the settings that differ from the paper's) and
the prose written from the records and `lora_nb.claims`' verdicts.

Data flows one way: records → `lora_nb.tables` → here → `lora_nb.results` (the README's block).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from . import claims
from .paper import reference_table
from .tables import METHOD_LABELS, TASK_LABELS, completed, cost_summary


def format_params(n: float) -> str:
    """294912 → "0.29M", as Table 2 writes parameter counts."""
    if pd.isna(n):
        return ""
    return f"{n / 1e6:.2f}M" if n < 1e8 else f"{n / 1e6:.0f}M"


def _cell(mean: float, std: float, failed: int = 0, mismatched: float = np.nan) -> str:
    """"86.1 ±0.4"; MNLI "m 86.1 ±0.4 / mm 86.5" when mismatched was evaluated; runs without a
    score (constant predictions) noted as failed."""
    if pd.isna(mean) and not failed:
        return ""
    text = "" if pd.isna(mean) else f"{mean:.1f}" if pd.isna(std) else f"{mean:.1f} ±{std:.1f}"
    if not pd.isna(mismatched):
        text = f"m {text} / mm {mismatched:.1f}"
    return text + (f" ({failed} failed)" if failed else "")


def signed(value: float, digits: int = 1) -> str:
    """A difference for prose: "+1.2", "−1.2" (a minus sign, not a hyphen), and "0.0" where it
    rounds to zero (never "−0.0")."""
    text = f"{value:+.{digits}f}"
    if float(text) == 0:
        return f"{0:.{digits}f}"
    return text.replace("-", "−")


def to_markdown(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False)


def styled(df: pd.DataFrame):
    """A table for a rendered page: no row index, floats to one decimal, text columns and their
    headers left-aligned (numbers stay right-aligned)."""
    text = [c for c in df.columns if df[c].dtype == object]
    # Element ids from the table's content, not pandas' random ones: a re-render is byte-identical.
    uuid = hashlib.sha1(df.to_csv().encode()).hexdigest()[:8]
    style = df.style.set_uuid(uuid).hide(axis="index").format(precision=1, na_rep="")
    if text:
        style = style.set_properties(subset=text, **{"text-align": "left"}).set_table_styles(
            [{"selector": f"th.col{df.columns.get_loc(c)}", "props": "text-align: left"} for c in text])
    return style


def table2_display(t2: pd.DataFrame, model: str) -> pd.DataFrame:
    """Wide Table 2: our rows (one per method) above the paper's RoBERTa-base rows (± its
    standard deviations where the paper gives them). "Avg." is over the tasks shown."""
    paper = reference_table("table2")
    std = reference_table("table2_std")
    tasks = [t for t in TASK_LABELS if t in set(t2["task"])]
    avg = f"Avg. ({len(tasks)} tasks)"
    rows = []
    for method in [m for m in METHOD_LABELS if m in set(t2["method"])]:
        sub = t2[t2["method"] == method].set_index("task")
        row = {"source": f"ours ({model})", "method": METHOD_LABELS[method],
               "trainable (no head)": format_params(sub["trainable_without_head"].median()),
               "trainable (with head)": format_params(sub["trainable"].median()),
               "seeds": int(sub["seeds"].min())}
        row.update({TASK_LABELS[t]: _cell(sub.at[t, "mean"], sub.at[t, "std"], sub.at[t, "failed"],
                                          sub.at[t, "mismatched"]) if t in sub.index else ""
                    for t in tasks})
        row[avg] = f"{sub.loc[tasks, 'mean'].mean():.1f}" if set(tasks) <= set(sub.index) else ""
        rows.append(row)
    for _, p in paper.iterrows():
        match = std[(std["method"] == p["method"]) & (std["trainable_params"] == p["trainable_params"])]
        row = {"source": "paper (RoBERTa-base)", "method": p["method"],
               "trainable (no head)": p["trainable_params"], "trainable (with head)": "",
               "seeds": 5 if p["method"] == "LoRA" else ""}
        row.update({TASK_LABELS[t]: _cell(p[t], match.iloc[0][t] if len(match) else np.nan) for t in tasks})
        row[avg] = f"{np.mean([p[t] for t in tasks]):.1f}"
        rows.append(row)
    return pd.DataFrame(rows)


def table6_display(t6: pd.DataFrame, model: str) -> pd.DataFrame:
    """Wide Table 6: rows source × weight type, columns r, with the paper's GPT-3 MultiNLI rows
    and the course reproduction's RoBERTa-base MNLI rows."""
    ranks = sorted(set(t6["r"])) or [1, 2, 4, 8, 64]
    canonical = ["Wq", "Wq,Wv", "Wq,Wk,Wv,Wo"]
    present = list(dict.fromkeys(t6["weight_type"]))
    rows = []
    for wt in [w for w in canonical if w in present] + [w for w in present if w not in canonical]:
        sub = t6[t6["weight_type"] == wt].set_index("r")
        rows.append({"source": f"ours ({model})", "weight type": wt,
                     **{f"r={r}": _cell(sub.at[r, "mean"], sub.at[r, "std"]) if r in sub.index else ""
                        for r in ranks}})
    paper = reference_table("table6")
    for _, p in paper[paper["dataset"] == "MultiNLI"].iterrows():
        rows.append({"source": "paper (GPT-3 175B)", "weight type": p["weight_type"],
                     **{f"r={r}": f"{p[f'r{r}']:.1f}" for r in ranks if f"r{r}" in p}})
    course = reference_table("course_table6")
    course = course[course["table"] == 6]
    parsed = course["setting"].str.extract(r"^(?P<wt>\S+) r(?P<r>\d+)$")
    for wt in parsed["wt"].unique():
        sel = parsed["wt"] == wt
        values = dict(zip(parsed.loc[sel, "r"].astype(int), course.loc[sel, "value"]))
        rows.append({"source": "tn292 (RoBERTa-base, 3 ep.)", "weight type": wt,
                     **{f"r={r}": f"{values[r]:.1f}" if r in values else "" for r in ranks}})
    return pd.DataFrame(rows)


def table5_display(t5: pd.DataFrame) -> pd.DataFrame:
    """Table 5 for a page: weight type, r, ours (mean ± std, seeds), the paper's GPT-3 MultiNLI."""
    return pd.DataFrame({"weight type": t5["weight_type"], "r": t5["r"],
                         "ours (MNLI)": [_cell(m, s) for m, s in zip(t5["mean"], t5["std"])],
                         "seeds": t5["seeds"], "paper (GPT-3, MultiNLI ±0.1)": t5["paper"]})


def tuning_display(tuning: pd.DataFrame) -> pd.DataFrame:
    """`tuning_table` one row per task and method: each rate's dev score, the chosen one starred,
    ✗ where that run did not converge."""
    rows = []
    for (task, method), g in tuning.groupby(["task", "method"], sort=False):
        cells = [f"{r.learning_rate:g}: {r.dev:.1f}{' ★' if r.chosen else ''}{'' if r.converged else ' ✗'}"
                 for r in g.itertuples()]
        rows.append({"task": TASK_LABELS.get(task, task), "method": METHOD_LABELS.get(method, method),
                     "learning rate: best dev score (★ chosen, ✗ not converged)": ";  ".join(cells)})
    return pd.DataFrame(rows)


def comparisons_display(comparisons: pd.DataFrame) -> pd.DataFrame:
    """The comparisons rounded for a page: one row per comparison, no index."""
    if comparisons.empty:
        return comparisons
    out = comparisons.assign(task=comparisons["task"].map(lambda t: TASK_LABELS.get(t, t)))
    out = out.rename(columns={"a_stat": "A (mean over seeds)", "b_stat": "B (mean over seeds)",
                              "difference": "A − B (mean)", "lo": "95% low", "hi": "95% high",
                              "kind": "test"})
    out = out.round(1)
    floats = out.select_dtypes("float").columns
    out[floats] = out[floats] + 0.0  # −0.0 rounds to 0.0
    return out


def claims_summary(comparisons: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """The claims table: claim, the paper's evidence, ours (differences with 95% intervals),
    verdict — all from `claims.decide`'s comparisons and the reference CSVs."""
    verdicts = claims.claim_verdicts(comparisons)
    paper2 = reference_table("table2").set_index("method")
    t6 = reference_table("table6")
    t6 = t6[t6["dataset"] == "MultiNLI"].set_index("weight_type")
    t5 = reference_table("table5")
    t5 = t5[t5["dataset"] == "MultiNLI"].set_index("weight_type")["value"]
    tasks = [t for t in TASK_LABELS if len(df) and t in set(df[df["tags"].map(lambda x: "table2" in x)]["task"])]
    avg = lambda m: (" / ".join(f"{v:.1f}" for v in paper2.loc[[m], tasks].mean(axis=1))
                     if tasks else "n/a")
    evidence = {
        "C1": claims.PAPER_EVIDENCE["C1"].format(lora_avg=avg("LoRA"), ft_avg=avg("FT")),
        "C2": claims.PAPER_EVIDENCE["C2"].format(lora_avg=avg("LoRA"), bitfit_avg=avg("BitFit")),
        "C3": claims.PAPER_EVIDENCE["C3"].format(**{f"qv{r}": t6.loc["Wq,Wv", f"r{r}"] for r in (1, 2, 8, 64)}),
        "C4": claims.PAPER_EVIDENCE["C4"].format(q8=t5["Wq"], qv4=t5["Wq,Wv"], qkvo2=t5["Wq,Wk,Wv,Wo"]),
        "C6": claims.PAPER_EVIDENCE["C6"].format(lora_avg=avg("LoRA"), adpt_avg=avg("AdptD")),
    }
    rows = []
    for claim, text in claims.CLAIMS.items():
        sub = comparisons[comparisons["claim"] == claim] if len(comparisons) else comparisons
        ours = "; ".join(
            f"{TASK_LABELS.get(r.task, r.task)}: {r.a} − {r.b} = {signed(r.difference)} [{signed(r.lo)}, {signed(r.hi)}]"
            + (f" ({r.note})" if r.note else "")
            for r in sub.itertuples()) or "not run"
        if claim == "C1" and len(df):
            share = _parameter_share(df)
            if share is not None:
                ours = f"LoRA trains {share:.2%} of FT's parameters (head excluded). " + ours
        rows.append({"claim": claim, "statement": text, "paper": evidence[claim],
                     "ours: difference [95% interval], points": ours, "verdict": verdicts[claim]})
    return pd.DataFrame(rows)


def _parameter_share(df: pd.DataFrame) -> float | None:
    t2 = df[completed(df) & df["tags"].map(lambda t: "table2" in t)]
    lora = t2[t2["method"] == "lora"]["trainable_without_head"].median()
    full = t2[t2["method"] == "full"]["trainable_without_head"].median()
    return None if pd.isna(lora) or pd.isna(full) else float(lora / full)


def _values(series: pd.Series, fmt=str) -> str:
    vals = sorted({v for v in series.dropna()}, key=lambda v: (str(type(v)), v))
    return ", ".join(fmt(v) for v in vals) if vals else "n/a"


def _model_size(done: pd.DataFrame) -> float:
    """The model's own parameters with its head: a fine-tuned run's (every other method adds
    some: LoRA's A and B, the adapters), else the smallest run's."""
    full = done[done["method"] == "full"]["total_params"]
    return float((full if len(full) else done["total_params"]).min())


def _precision(done: pd.DataFrame) -> str:
    """How many runs trained in bf16 autocast and how many in fp32: ``mixed_precision="auto"``
    chooses bf16 where the machine has bf16 arithmetic, so a sweep over several machines mixes them."""
    names = {"bf16": "bf16 autocast (fp32 master weights)", "no": "fp32", "fp16": "fp16 autocast"}
    counts = done["mixed_precision"].fillna("not recorded").value_counts()
    text = "; ".join(f"{names.get(k, k)}: {n} runs" for k, n in counts.items())
    if len(counts) > 1:
        text += (" (the machines of different sittings: \"auto\" picks bf16 only on a CPU with bf16 "
                 "arithmetic; bf16 against fp32 on the same runs: benchmarks/results/)")
    return text


def deviations(df: pd.DataFrame) -> pd.DataFrame:
    """Paper against ours, row by row: every setting that differs, ours read from the records."""
    done = df[completed(df) & df["tags"].map(lambda t: "budget" not in t)]
    if done.empty:
        return pd.DataFrame(columns=["setting", "paper (RoBERTa-base, Table 9)", "ours"])
    t9 = reference_table("table9").set_index("task")
    tasks = [t for t in TASK_LABELS if t in set(done["task"])]
    per_task = lambda col, fmt=str: "; ".join(
        f"{TASK_LABELS[t]} {_values(done[done['task'] == t][col], fmt)}" for t in tasks)
    lrs = done.groupby("method")["learning_rate"].agg(lambda s: _values(s, lambda v: f"{v:g}"))
    lora = done[done["method"] == "lora"]
    adapters = done[done["method"].isin(["houlsby", "pfeiffer"])]
    threads = _values(done["torch_threads"], lambda v: f"{int(v)}")
    device = _values(done["device"].map(lambda d: "CPU" if str(d).startswith("cpu") else d))
    rows = [
        ("model", "RoBERTa-base (125M parameters, 12 layers, d = 768)",
         f"{_values(done['model'])} ({_model_size(done) / 1e6:.2f}M parameters with head, "
         "6 layers, d = 384; BERT)"),
        ("training examples", "the whole training set (MNLI 393k, SST-2 67k, QQP 364k, STS-B 5.7k, …)",
         per_task("train_examples", lambda v: f"{int(v):,}")),
        ("optimizer steps per run", "epochs × examples / batch: e.g. SST-2 60 epochs × 67,349 / 128 "
         f"≈ {60 * 67349 / 128 / 1000:.1f}k steps",
         per_task("optimizer_steps", lambda v: f"{int(v)}")),
        ("epochs", "; ".join(f"{TASK_LABELS[t]} {t9.at[t, 'epochs']}" for t in tasks if t in t9.index),
         "passes over the training examples, steps × batch / examples: " + "; ".join(
             f"{TASK_LABELS[t]} {_values(g['optimizer_steps'] * g['batch_size'] / g['train_examples'], lambda v: f'{v:.1f}')}"
             for t in tasks for g in [done[done["task"] == t]])),
        ("batch size", "Table 9's 16 or 32 per GPU on the scripts' 8 GPUs (CoLA 2): 128 or 256 per "
         "optimizer step (CoLA 64)",
         _values(done["batch_size"], lambda v: f"{int(v)}") + " per optimizer step, one process"),
        ("learning rate", "LoRA 4e-4 … 5e-4 (Table 9); FT, BitFit, adapters: from prior work",
         "; ".join(f"{METHOD_LABELS.get(m, m)} {v}" for m, v in lrs.items())),
        ("LoRA r, α, targets", "r = 8, α = 8 (scripts: 16), Wq,Wv",
         f"Table 2: r = {_values(lora[lora['tags'].map(lambda t: 'table2' in t)]['r'], lambda v: f'{int(v)}')}, "
         f"α = {_values(lora['alpha'], lambda v: f'{v:g}')}, Wq,Wv; Tables 5–6: r ∈ "
         f"{{{_values(lora['r'], lambda v: f'{int(v)}')}}} × {_values(lora['weight_type'])}"),
        ("adapters", "AdptD (Rücklé et al.): 0.3M and 0.9M, numbers quoted from that paper",
         ("trained here: " + "; ".join(f"{METHOD_LABELS[m]} m = {_values(g['adapter_size'], lambda v: f'{int(v)}')}"
                                       for m, g in adapters.groupby("method"))) if len(adapters) else "not run"),
        ("classification head reads", "the first token (RoBERTa's classification head)", _values(done["pooling"])),
        ("max sequence length", "512", _values(done["max_length"], lambda v: f"{int(v)}")),
        ("seeds per cell", "5 (median)", _values(done.groupby(["task", "method", "weight_type", "r"],
                                                              dropna=False)["seed"].nunique(),
                                                 lambda v: f"{int(v)}") + " (median)"),
        ("validation examples", "the whole validation split (MNLI matched 9,815)",
         per_task("eval_examples", lambda v: f"{int(v):,}")),
        ("metric", "MNLI matched and mismatched acc. (best epoch chosen on matched), CoLA MCC, "
         "STS-B Pearson, accuracy elsewhere; best epoch",
         "the same metrics; best of the run's evaluations ("
         + _values(done["record"].map(lambda r: len(r.get("evaluations") or [])), lambda v: f"{int(v)}")
         + " per run)" + (
             "; MNLI matched only (the local data has no mismatched split)"
             if "mnli" in set(done["task"]) and done["mismatched"].isna().all() else "")),
        ("FT baseline", "not run: RoBERTa's numbers (Liu et al., 2019) copied, with MRPC, RTE and "
         "STS-B started from the MNLI model, weight decay 0.1 and the learning rate picked from "
         "{1e-5, 2e-5, 3e-5} on the validation set",
         "run here on every task from the pretrained model: " + "; ".join(
             f"lr {_values(g['learning_rate'], lambda v: f'{v:g}')}, weight decay {_values(g['record'].map(lambda r: r['config'].get('weight_decay', 0.0)))}"
             for _, g in done[done["method"] == "full"].groupby("method")) or "not run"),
        ("arithmetic", "fp32 (Table 9 states none)", _precision(done)),
        ("hardware", "NVIDIA Tesla V100 GPUs (microsoft/LoRA's scripts launch 8 processes; CoLA 2)",
         f"{device}, {threads} {'thread' if threads == '1' else 'threads'} per run"),
    ]
    return pd.DataFrame(rows, columns=["setting", "paper (RoBERTa-base, Table 9)", "ours"])


def summary_text(df: pd.DataFrame, comparisons: pd.DataFrame) -> str:
    """The page's opening paragraph, from the records: what ran, on what, and the verdicts."""
    main = df[completed(df) & df["tags"].map(lambda t: "budget" not in t)]
    if main.empty:
        return "No completed runs yet."
    tasks = [t for t in TASK_LABELS if t in set(main["task"])]
    t2 = main[main["tags"].map(lambda t: "table2" in t)]
    steps = "; ".join(f"{TASK_LABELS[t]} {_values(main[main['task'] == t]['optimizer_steps'], lambda v: f'{int(v)}')}"
                      for t in tasks)
    examples = "; ".join(f"{TASK_LABELS[t]} {_values(main[main['task'] == t]['train_examples'], lambda v: f'{int(v):,}')}"
                         f" / {_values(main[main['task'] == t]['eval_examples'], lambda v: f'{int(v):,}')}"
                         for t in tasks)
    verdicts = claims.claim_verdicts(comparisons)
    counts = {v: sum(x == v for x in verdicts.values()) for v in
              (claims.REPRODUCED, claims.INCONCLUSIVE, claims.NOT_REPRODUCED, claims.NOT_TESTABLE)}
    size = _model_size(main) / 1e6
    methods = ", ".join(METHOD_LABELS.get(m, m) for m in METHOD_LABELS if m in set(t2["method"]))
    seeds = int(t2.groupby(["task", "method"])["seed"].nunique().median()) if len(t2) else 0
    t6 = main[main["tags"].map(lambda t: "table6" in t)]
    t6_seeds = int(t6.groupby(["weight_type", "r"])["seed"].nunique().median()) if len(t6) else 0
    return (
        f"**What ran.** {len(main)} fine-tuning runs of **{_values(main['model'])}** "
        f"({size:.2f}M parameters; the paper: RoBERTa-base, 125M) on real GLUE data: "
        f"{', '.join(TASK_LABELS[t] for t in tasks)} (training / validation examples: {examples}). "
        f"Optimizer steps per run (batch {_values(main['batch_size'], lambda v: f'{int(v)}')}): {steps} — "
        f"the paper trains for tens of thousands. Table 2 compares {methods} with {seeds} "
        f"{'seed' if seeds == 1 else 'seeds'} per cell (median); "
        + (f"Tables 5–6 vary LoRA's rank and weight types on MNLI with {t6_seeds} "
           f"{'seed' if t6_seeds == 1 else 'seeds'} per cell.\n\n" if t6_seeds else
           "Tables 5–6 have not run yet.\n\n")
        + f"**Verdicts.** Of the paper's {len(verdicts)} claims tested on this page, {counts[claims.REPRODUCED]} "
        f"{'is' if counts[claims.REPRODUCED] == 1 else 'are'} reproduced, {counts[claims.INCONCLUSIVE]} "
        f"inconclusive at this scale, {counts[claims.NOT_TESTABLE]} not testable at this budget (a run did "
        f"not converge, a side has one seed, or a side has not run) and {counts[claims.NOT_REPRODUCED]} "
        "not reproduced: " + "; ".join(f"{c} {v}" for c, v in verdicts.items())
        + ". §7's claim (C5) is decided on the companion page. A small model trained for "
        f"{_values(main['optimizer_steps'], lambda v: f'{int(v):,}')} optimizer steps tests the claims' "
        "direction and relative size, not the paper's absolute numbers.")


def cost_text(df: pd.DataFrame) -> str:
    """What the runs on this page cost, from their records, and the command that regenerates them."""
    cost = cost_summary(df)
    done = df[completed(df)]
    threads = int(done["torch_threads"].max()) if len(done) else 0
    versions = done["versions"].iloc[-1] if len(done) else {}
    commits = sorted({c[:10] for c in done["git_commit"].dropna()})
    return (
        f"{cost['runs']} completed runs, {threads} {'thread' if threads == 1 else 'threads'} each, ran between {cost['first_start'][:16]} and "
        f"{cost['last_finish'][:16]}: {cost['span_seconds'] / 3600:.2f} h of wall time, "
        f"{cost['span_seconds'] * cost['cores'] / 3600:.2f} core-hours on {cost['cores']} cores, "
        f"{cost['step_fraction']:.0%} of which went to training and evaluation steps (the rest: kernels, imports, "
        "data and model loading, idle workers). "
        "Regenerate with `make reference`: it restores the committed records, runs only what is "
        "missing (so an interrupted sweep resumes, also on a fresh clone) and renders this page. "
        f"Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f"; git commit{'s' if len(commits) > 1 else ''} {', '.join(commits) or 'unknown'}.")


def claim_text(comparisons: pd.DataFrame, claim: str) -> str:
    """One claim in prose: the paper's statement, its verdict, and each comparison's difference
    with its interval and verdict, from `claims.decide`'s comparisons."""
    verdict = claims.claim_verdicts(comparisons)[claim]
    rows = comparisons[comparisons["claim"] == claim] if len(comparisons) else comparisons
    head = f"**{claim}: {claims.CLAIMS[claim]}.** Verdict: **{verdict}**."
    if not len(rows):
        return head + " No comparison could be made: a side has no completed runs in these records."
    parts = [f"{TASK_LABELS.get(r.task, r.task)}, {r.a} − {r.b}: {signed(r.difference)} points "
             f"[{signed(r.lo)}, {signed(r.hi)}], {r.verdict}" + (f" ({r.note})" if r.note else "")
             for r in rows.itertuples()]
    return head + " " + "; ".join(parts) + "."


def grid_edge_text(tuning: pd.DataFrame) -> str:
    """Which chosen rates lie at an edge of their grid (the grid may not bracket the best rate)."""
    if tuning.empty:
        return "No tuning runs in these records."
    edges = []
    for (task, method), g in tuning.groupby(["task", "method"], sort=False):
        chosen = g[g["chosen"]]["learning_rate"]
        if len(chosen) and chosen.iloc[0] in (g["learning_rate"].min(), g["learning_rate"].max()):
            side = "top" if chosen.iloc[0] == g["learning_rate"].max() else "bottom"
            edges.append(f"{TASK_LABELS.get(task, task)} {METHOD_LABELS.get(method, method)} "
                         f"({chosen.iloc[0]:g}, the {side})")
    n = tuning.groupby(["task", "method"]).ngroups
    if not edges:
        return f"Every one of the {n} tuned cells chose a rate inside its grid."
    return (f"{len(edges)} of {n} tuned cells chose a rate at the edge of the grid: "
            + "; ".join(edges) + ".")


def convergence_text(df: pd.DataFrame) -> str:
    """How many completed runs converged by `lora_nb.convergence`'s rule, and which did not."""
    done = df[completed(df)]
    if not len(done):
        return "no completed runs"
    late = done[~done["converged"]]
    lines = [f"{int(done['converged'].sum())} of {len(done)} completed runs converged "
             "(best dev score before the last quarter of training, or a gain in it below one "
             "standard error of the dev score and at least half a point)"]
    lines += [f"- not converged: {r.run_id}: {r.convergence}" for r in late.itertuples()]
    return "\n".join(lines)
