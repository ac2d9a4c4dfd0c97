"""Claim C5 (Hu et al., 2021, §7), decided from the readings of `lora_nb.subspace`: each tested
against a random baseline of the same shape, with a 95% two-level bootstrap interval (units, then
their replicates: `bootstrap_units`, through `lora_nb.claims.bootstrap`) and the verdict rule of
`lora_nb.claims`.

- (a) Figure 3: φ between the A matrices of the r = 8 and r = 64 runs against random Gaussian A of
  the same shapes (`similarity_comparisons`);
- (b) Table 7: ΔW's projection of W against a random update of the same rank and Frobenius norm
  (`amplification_comparison`);
- `subspace_claims` gives every comparison as rows of the claims table, `subspace_findings` the
  §7 page's paragraph from their verdicts, `paper_table7` the paper's numbers they quote.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from . import claims
from .claims import N_BOOT, NOT_REPRODUCED, NOT_TESTABLE, REPRODUCED, all_of
from .paper import reference_table
from .subspace import adapter_matrices, seed_pairs, subspace_similarity

PHI_STATISTICS = {
    # label: (i, j, block) — block: the mean of φ over the top-left i × j block
    "φ(1,1)": (1, 1, False),
    "mean φ(i,j), i,j ≤ 8": (8, 8, True),
}
PAPER_PHI_TOP = 0.5  # §7.2: the top directions of A_8 and A_64 share a subspace with φ > 0.5


def _phi_statistic(phi: np.ndarray, i: int, j: int, block: bool) -> float:
    return float(phi[:i, :j].mean()) if block else float(phi[i - 1, j - 1])


def bootstrap_units(values: list[np.ndarray], n_boot: int = N_BOOT, seed: int = 0
                    ) -> tuple[float, float, float]:
    """Mean over units of each unit's mean, and its 95% two-level percentile bootstrap interval:
    each round resamples the units with replacement and, within each drawn unit, its
    replicates (seeds or seed pairs) with replacement."""
    values = [np.asarray(v, dtype=np.float64) for v in values if len(v)]
    if not values:
        raise ValueError("no units to bootstrap")
    point = float(np.mean([v.mean() for v in values]))
    stats = claims.bootstrap(
        lambda units, rng: np.mean([values[u][rng.integers(0, len(values[u]), len(values[u]))].mean()
                                    for u in units]), len(values), n_boot, seed)
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return point, float(lo), float(hi)


def similarity_comparisons(a_small: dict[int, dict], a_large: dict[int, dict], task: str = "",
                           ranks: tuple[int, int] = (8, 64), weight_types: Iterable[str] = ("q", "v"),
                           n_random: int = 8, n_boot: int = N_BOOT, seed: int = 0) -> list:
    """Claim C5 (a), Figure 3: φ between the A matrices of two ranks against random Gaussian
    A of the same shapes, one `claims.Comparison` per statistic of `PHI_STATISTICS`.

    ``a_small`` and ``a_large`` map seed → {(layer, weight type): A}. Each (layer, weight type)
    is a unit; its replicates are the seed pairs (`seed_pairs`: pairs of different seeds when
    there are any). For each unit and pair, the random baseline is the mean of the statistic
    over ``n_random`` pairs of Gaussian matrices of the same shapes. The difference (ours −
    random) is the mean over units of the mean over pairs; its 95% interval is the two-level
    bootstrap of `bootstrap_units` (units, then pairs within units); the verdict is
    ``claims.verdict(lo, hi, "superior")``.
    """
    pairs, cross = seed_pairs(a_small, a_large)
    units = sorted({k for s, _ in pairs for k in a_small[s] if k[1] in tuple(weight_types)}
                   & {k for _, t in pairs for k in a_large[t]})
    if not units:
        raise ValueError("the adapters share no (layer, weight type)")
    rng = np.random.default_rng(seed)
    ours = {label: [] for label in PHI_STATISTICS}
    rand = {label: [] for label in PHI_STATISTICS}
    for unit in units:
        for label in PHI_STATISTICS:
            ours[label].append([])
            rand[label].append([])
        for s, t in pairs:
            x, y = a_small[s][unit], a_large[t][unit]
            phi = subspace_similarity(x, y)
            draws = [subspace_similarity(rng.standard_normal(np.shape(x)), rng.standard_normal(np.shape(y)))
                     for _ in range(n_random)]
            for label, (i, j, block) in PHI_STATISTICS.items():
                ours[label][-1].append(_phi_statistic(phi, i, j, block))
                rand[label][-1].append(np.mean([_phi_statistic(p, i, j, block) for p in draws]))
    rows = []
    n_seeds = f"{len(a_small)} × {len(a_large)} seeds, {len(pairs)} {'cross-seed ' if cross else ''}pairs"
    for label in PHI_STATISTICS:
        diffs = [np.subtract(o, r) for o, r in zip(ours[label], rand[label])]
        diff, lo, hi = bootstrap_units(diffs, n_boot, seed)
        note = (f"{len(units)} (layer, weight type) units; paper (GPT-3): φ(1,1) > {PAPER_PHI_TOP}"
                + ("" if cross else "; every pair shares a seed, hence part of the initialisation"))
        rows.append(claims.Comparison(
            "C5", task, f"A(r={ranks[0]}) vs A(r={ranks[1]}): {label}", "random Gaussian A, same shapes",
            "superior", float(np.median(np.concatenate(ours[label]))),
            float(np.median(np.concatenate(rand[label]))), diff, lo, hi, n_seeds,
            claims.verdict(lo, hi, "superior"), note))
    return rows


def amplification_comparison(amp: pd.DataFrame, r: int, task: str = "", weight_type: str = "q",
                             n_boot: int = N_BOOT, seed: int = 0, paper: pd.DataFrame | None = None):
    """Claim C5 (b), Table 7: does ΔW's top-r subspace hold more of W than a random update of the
    same rank and Frobenius norm? The statistic is ‖UᵀWV‖_F as a percentage of W's own top-r
    projection (U, V: the top-r singular vectors of ΔW, or of the random update:
    ``proj_random_update`` of `amplification`), so layers of different scale compare.

    ``amp`` is `amplification_table` output for several runs, with a ``seed`` column (one run per
    seed). Units are the layers; their replicates the seeds; the difference (ours − random, in
    percentage points), its 95% interval (two-level bootstrap, `bootstrap_units`) and the
    verdict (``claims.verdict(lo, hi, "superior")``) as in `similarity_comparisons`.
    """
    sel = amp[(amp["r"] == r) & (amp["weight_type"] == weight_type)]
    if sel.empty:
        raise ValueError(f"no {weight_type!r} rows at r = {r} in the amplification table")
    ours = 100 * sel["proj_delta"] / sel["proj_w"]
    rand = 100 * sel["proj_random_update"] / sel["proj_w"]
    diffs = [(ours - rand)[sel["layer"] == layer].to_numpy() for layer in sorted(sel["layer"].unique())]
    diff, lo, hi = bootstrap_units(diffs, n_boot, seed)
    seeds = sel["seed"].nunique() if "seed" in sel else 1
    note = f"{len(diffs)} layers × {seeds} seeds"
    if paper is not None and r in set(paper["r"]):
        p = paper.set_index("r").loc[r]
        note += (f"; paper (GPT-3 175B, layer 48): {100 * p['proj_delta'] / p['proj_w']:.1f}% vs "
                 f"{100 * p['proj_random'] / p['proj_w']:.2f}% (random matrix)")
    w = {"q": "Wq", "k": "Wk", "v": "Wv", "o": "Wo"}.get(weight_type, weight_type)
    return claims.Comparison(
        "C5", task, f"ΔW{w[1:]} r={r}: ‖UᵀWV‖ as % of W's top-r", "random update, same rank and norm",
        "superior", float(np.median(ours)), float(np.median(rand)), diff, lo, hi, f"{seeds}",
        claims.verdict(lo, hi, "superior"), note)


def subspace_claims(runs: dict, amp: pd.DataFrame | None = None, weight_types: Iterable[str] = ("q", "v"),
                    n_random: int = 8, n_boot: int = N_BOOT, seed: int = 0,
                    paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every comparison behind claim C5 (`C5`), as rows of the claims table (the columns of
    `lora_nb.claims.Comparison`): φ between r = 8 and r = 64 against random A
    (`similarity_comparisons`, from the adapters of `subspace_runs`), and, given the
    amplification table ``amp`` (with a ``seed`` column), ΔWq against a random update of the
    same rank and norm at each rank (`amplification_comparison`). ``paper``: the paper's Table 7
    (`paper_table7`), quoted in the notes."""
    by_rank = runs["by_rank"]
    task = by_rank[8][0]["task"]
    a = {r: {e["seed"]: {k: m["A"] for k, m in adapter_matrices(e["adapter"]).items()}
             for e in by_rank[r]} for r in (8, 64)}
    rows = similarity_comparisons(a[8], a[64], task, (8, 64), weight_types, n_random, n_boot, seed)
    if amp is not None and not amp.empty:
        rows += [amplification_comparison(amp, int(r), task, n_boot=n_boot, seed=seed, paper=paper)
                 for r in sorted(amp["r"].unique())]
    table = claims.comparisons_table(rows)
    late = [e["run_id"] for entries in by_rank.values() for e in entries if not e.get("converged", True)]
    if late and len(table):  # an update that has not finished learning tests nothing (lora_nb.convergence)
        table["verdict"] = claims.NOT_TESTABLE
        table["note"] = [f"{len(late)} of {sum(map(len, by_rank.values()))} runs did not converge"
                         + (f"; {n}" if n else "") for n in table["note"]]
    return table


def paper_table7() -> pd.DataFrame:
    """The paper's Table 7 (GPT-3 175B, layer 48, Wq), one row per r: ``r, proj_delta, proj_w,
    proj_random, w_norm, delta_norm, amplification`` (source: lora_nb/reference/SOURCES.md)."""
    paper = reference_table("table7")
    return paper.assign(amplification=paper["delta_norm"] / paper["proj_delta"])


# --------------------------------------------------------------------------- findings

# An effect is "as the paper finds" only at this many times its random control or more (the
# paper's ΔWq projection is 16× a random matrix's at r = 4, Table 7); above chance but below it,
# the findings say it is weaker than the paper's.
STRONG_RATIO = 2.0


def _paper_projection_ratio(paper: pd.DataFrame | None, r: int) -> float | None:
    """Table 7's ‖UᵀWqV‖ for ΔW over that of a random matrix at rank `r`, when quoted."""
    if paper is None or r not in set(paper["r"]):
        return None
    row = paper.set_index("r").loc[r]
    return float(row["proj_delta"] / row["proj_random"]) if row["proj_random"] else None

_VERDICT_PHRASES = {
    "reproduced": "reproduced",
    "not reproduced": "not reproduced (the interval lies below zero)",
    "inconclusive": "inconclusive (the interval includes zero)",
    "not testable at this budget": "not testable at this budget (a run did not converge)",
}


def _interval(row, digits: int) -> str:
    return f"{row.difference:+.{digits}f} [{row.lo:+.{digits}f}, {row.hi:+.{digits}f}]"


def _reading(verdict: str, ratio: float, as_paper: str, against: str, undecided: str) -> str:
    """How a §7 sentence ends: the verdict, and whether the effect is the paper's in size (at
    least `STRONG_RATIO` × its random control)."""
    if verdict == REPRODUCED and ratio >= STRONG_RATIO:
        return ", as the paper finds: " + as_paper
    if verdict == REPRODUCED:
        return (f", but weakly: above chance, yet under {STRONG_RATIO:g}× its control, so this is not "
                "the paper's effect in size.")
    return ": " + (against if verdict == NOT_REPRODUCED else undecided)


def subspace_findings(comparisons: pd.DataFrame, amp: pd.DataFrame | None = None,
                      paper: pd.DataFrame | None = None) -> str:
    """A paragraph on §7.2–7.3 written from the C5 comparisons (`subspace_claims`) and the
    amplification table: every statement quotes its numbers, and none claims more than its
    verdict — the paper's reading is called reproduced only where the verdict says so."""
    c5 = comparisons[comparisons["claim"] == "C5"] if len(comparisons) else comparisons
    parts = []
    phi = c5[c5["b"].str.startswith("random Gaussian")] if len(c5) else c5
    for row in phi.itertuples():
        stat = row.a.split(": ", 1)[-1]
        what = "the top direction's similarity" if stat == "φ(1,1)" else f"the top directions' similarity, {stat},"
        text = (f"Between the r = 8 and r = 64 adapters ({row.seeds}), {what} has median "
                f"{row.a_stat:.3f} against {row.b_stat:.3f} for random Gaussian A of the same shapes; "
                f"ours − random (mean, 95% interval) = {_interval(row, 3)}: {_VERDICT_PHRASES[row.verdict]}")
        ratio = row.a_stat / row.b_stat if row.b_stat else float("inf")
        text += f" ({ratio:.2f}× its control; the paper's φ(1,1) exceeds {PAPER_PHI_TOP}, a random pair's is near 0)"
        text += _reading(row.verdict, ratio,
                         "the learned subspaces share directions beyond chance"
                         + (f" (though the paper's φ(1,1) exceeds {PAPER_PHI_TOP})"
                            if stat == "φ(1,1)" and row.a_stat <= PAPER_PHI_TOP else "") + ".",
                         "the subspaces overlap less than random ones, unlike the paper's finding.",
                         "these adapters neither confirm nor refute the paper's finding.")
        parts.append(text)
    if len(phi) and not (phi["verdict"] == REPRODUCED).all():
        parts.append("One likely reason: in a short run A moves little from its random initialisation, "
                     "because its gradient is proportional to B, which starts at zero (§4.1).")
    proj = c5[c5["b"].str.startswith("random update")] if len(c5) else c5
    for row in proj.itertuples():
        w, r = row.a.split(":", 1)[0].split(" r=")
        ratio = row.a_stat / row.b_stat if row.b_stat else float("inf")
        paper_ratio = _paper_projection_ratio(paper, int(r))
        text = (f"At r = {r}, {w}'s top-r directions hold {row.a_stat:.2f}% of W's own top-r projection "
                f"‖UᵀWV‖_F (median), a random update of the same rank and norm {row.b_stat:.2f}%: "
                f"{ratio:.2f}× its control"
                + (f" (the paper: {paper_ratio:.0f}× a random matrix's)" if paper_ratio else "")
                + f"; ours − random, mean and 95% interval: {_interval(row, 2)} points: "
                f"{_VERDICT_PHRASES[row.verdict]}")
        text += _reading(row.verdict, ratio,
                         "ΔW's top directions hold more of W than a random update's "
                         "(the paper's reading: ΔW amplifies directions already in W).",
                         "ΔW's directions hold less of W than random ones, unlike the paper's finding.",
                         "it is not shown here that ΔW amplifies directions already in W.")
        parts.append(text)
    if amp is not None and not amp.empty:
        med = amp.groupby("r")[["amplification", "amplification_random"]].median()
        text = ("Amplification factor ‖ΔW‖_F / ‖UᵀWV‖_F, median over layers and seeds: "
                + ", ".join(f"{v:.3g} at r = {r}" for r, v in med["amplification"].items())
                + "; a random update of the same rank and norm: "
                + ", ".join(f"{v:.3g} at r = {r}" for r, v in med["amplification_random"].items()))
        if paper is not None and len(paper):
            text += " (paper, GPT-3 layer 48: " + ", ".join(
                f"{p.amplification:.3g} at r = {int(p.r)}" for p in paper.itertuples()) + ")"
        parts.append(text + ".")
    if len(c5):
        overall = all_of(list(c5["verdict"]))
        parts.append({REPRODUCED: "Claim C5: reproduced (every comparison above).",
                      NOT_REPRODUCED: "Claim C5: not reproduced (a comparison goes against the paper).",
                      NOT_TESTABLE: "Claim C5: not testable at this budget: the runs whose adapters are "
                                    "read here did not converge, so what they learned tests nothing yet."}
                     .get(overall, "Claim C5: inconclusive at this scale."))
    return " ".join(parts)
