"""Understanding the low-rank updates (Hu et al., 2021, §7.2 and §7.3).

- §7.2, Figures 3 and 4: the normalised subspace similarity φ between the row spaces of two
  learned ``A`` matrices (an r = 8 and an r = 64 run; or two r = 64 runs with different seeds,
  against random Gaussian matrices as a control).
- §7.3, Table 7: how ΔW relates to W. W is projected onto the r-dimensional subspace of ΔW,
  ‖Uᵀ W V‖_F with U, V the top-r left/right singular vectors of ΔW, and compared with the same
  projection onto W's own top-r directions and onto a random matrix's; the amplification factor
  is ‖ΔW‖_F / ‖Uᵀ W V‖_F.

Everything is computed in float64 numpy. Adapter files are those of `lora_nb.adapter`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

import numpy as np
import pandas as pd
import torch
from torch import nn

from .adapter import read_adapter
from .lora import TARGET_PATTERNS, LoRALinear

_LAYER_RE = re.compile(r"(?:^|\.)layer\.(\d+)\.")


def _as_float64(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _row_space(a: np.ndarray, name: str) -> np.ndarray:
    """Right singular vectors of `a` (r × d) as rows, by decreasing singular value."""
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D matrix (r × d), got shape {a.shape}")
    r, d = a.shape
    if r > d:
        raise ValueError(f"{name}: rank dimension r = {r} exceeds the feature dimension d = {d}")
    return np.linalg.svd(a, full_matrices=False)[2]


def subspace_similarity(
    a1: np.ndarray | torch.Tensor, a2: np.ndarray | torch.Tensor
) -> np.ndarray:
    """Normalised subspace similarity of paper §7.2 (Eq. 4), for every pair (i, j).

    ``a1`` is r1 × d and ``a2`` r2 × d (LoRA ``A`` matrices; pass ``B.T`` for B). With U1, U2
    their right singular vectors (row spaces, by decreasing singular value),

        φ(a1, a2, i, j) = ‖U1[:i] U2[:j]ᵀ‖_F² / min(i, j)  ∈ [0, 1].

    Returns an (r1, r2) array whose entry [i-1, j-1] is φ(i, j): 1 when one top subspace
    contains the other, 0 when they are orthogonal.
    """
    a1, a2 = _as_float64(a1), _as_float64(a2)
    v1, v2 = _row_space(a1, "a1"), _row_space(a2, "a2")
    if v1.shape[1] != v2.shape[1]:
        raise ValueError(
            f"a1 and a2 live in different spaces: d = {v1.shape[1]} vs d = {v2.shape[1]}"
        )
    overlap = (v1 @ v2.T) ** 2                     # (r1, r2): squared cosines
    cumulative = overlap.cumsum(axis=0).cumsum(axis=1)  # [i-1, j-1] = ‖U1[:i] U2[:j]ᵀ‖_F²
    i = np.arange(1, v1.shape[0] + 1)[:, None]
    j = np.arange(1, v2.shape[0] + 1)[None, :]
    return np.clip(cumulative / np.minimum(i, j), 0.0, 1.0)


def random_similarity(r1: int, r2: int, d: int, seed: int = 0) -> np.ndarray:
    """φ between two random Gaussian matrices (r1 × d and r2 × d): the control of Figure 4.

    Its expectation is max(i, j) / d, since E‖U1[:i] U2[:j]ᵀ‖_F² = i·j / d for independent
    random subspaces.
    """
    rng = np.random.default_rng(seed)
    return subspace_similarity(rng.standard_normal((r1, d)), rng.standard_normal((r2, d)))


def _weight_type(module: str, allowed: Iterable[str] | None) -> str:
    candidates = [t for t in (allowed or TARGET_PATTERNS) if t in TARGET_PATTERNS]
    matches = [t for t in candidates if re.search(TARGET_PATTERNS[t], module)]
    if len(matches) != 1:
        raise ValueError(
            f"cannot tell the weight type of module {module!r}: it matches {matches or 'none'} "
            f"of {candidates}"
        )
    return matches[0]


def adapter_matrices(path: str | os.PathLike) -> dict[tuple[int, str], dict]:
    """The LoRA matrices of an adapter file, keyed by (layer index, weight type).

    Each value holds ``A`` (r × in), ``B`` (out × r), ``scaling`` (α / r), ``r`` and
    ``module`` (the module's name in the model, e.g. ``bert.encoder.layer.3.attention.self.query``).
    The weight type ("q", "k", "v", "o", ...) comes from `lora_nb.lora.TARGET_PATTERNS`, the
    layer from ``.layer.N.`` in the module name.
    """
    state, meta = read_adapter(path)
    config = meta.get("lora_config")
    if not config:
        raise ValueError(f"{path}: no LoRA configuration in the metadata (not a LoRA adapter?)")
    scaling = float(config["alpha"]) / int(config["r"])
    out: dict[tuple[int, str], dict] = {}
    for key in sorted(k for k in state if k.endswith(".lora_A")):
        module = key[: -len(".lora_A")]
        b_key = module + ".lora_B"
        if b_key not in state:
            raise ValueError(f"{path}: {key} has no matching {b_key}")
        found = _LAYER_RE.search(module)
        if found is None:
            raise ValueError(f"{path}: no layer index ('.layer.N.') in module name {module!r}")
        a, b = state[key], state[b_key]
        entry = {
            "A": a, "B": b, "scaling": scaling, "r": int(a.shape[0]), "module": module,
        }
        out[(int(found.group(1)), _weight_type(module, config.get("targets")))] = entry
    if not out:
        raise ValueError(f"{path}: the adapter holds no LoRA matrices")
    return out


def similarity_by_layer(
    path1: str | os.PathLike,
    path2: str | os.PathLike,
    weight_types: Iterable[str] = ("q", "v"),
    matrix: str = "A",
) -> pd.DataFrame:
    """φ(i, j) between two adapters, per layer and weight type (Figures 3 and 4, §7.2).

    Long format, columns ``layer, weight_type, i, j, phi`` (i ranges over the first adapter's
    rank, j over the second's), for every (layer, weight type) present in both. ``matrix="B"``
    compares the column spaces of the B matrices instead (paper Appendix H).
    """
    if matrix not in ("A", "B"):
        raise ValueError(f"matrix: 'A' or 'B', got {matrix!r}")
    m1, m2 = adapter_matrices(path1), adapter_matrices(path2)
    types = tuple(weight_types)
    common = sorted(k for k in m1.keys() & m2.keys() if k[1] in types)
    if not common:
        raise ValueError(
            f"the adapters share no layer with weight type in {types}: "
            f"{sorted(m1)} vs {sorted(m2)}"
        )
    frames = []
    for layer, wtype in common:
        x1, x2 = m1[(layer, wtype)][matrix], m2[(layer, wtype)][matrix]
        if matrix == "B":
            x1, x2 = x1.T, x2.T
        phi = subspace_similarity(x1, x2)
        i, j = np.meshgrid(
            np.arange(1, phi.shape[0] + 1), np.arange(1, phi.shape[1] + 1), indexing="ij"
        )
        frames.append(pd.DataFrame({
            "layer": layer, "weight_type": wtype,
            "i": i.ravel(), "j": j.ravel(), "phi": phi.ravel(),
        }))
    return pd.concat(frames, ignore_index=True)


def _projection_norm(w: np.ndarray, m: np.ndarray, r: int) -> float:
    """‖Uᵀ W V‖_F with U, V the top-r left / right singular vectors of `m`."""
    u, _, vh = np.linalg.svd(m, full_matrices=False)
    return float(np.linalg.norm(u[:, :r].T @ w @ vh[:r].T))


def amplification(
    W: np.ndarray | torch.Tensor,
    delta: np.ndarray | torch.Tensor,
    r: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """How much ΔW amplifies directions of W (paper §7.3, Table 7), in float64.

    - ``delta_norm``: ‖ΔW‖_F;
    - ``proj_delta``: ‖Uᵀ W V‖_F, with U, V the top-r left / right singular vectors of ΔW;
    - ``proj_w``: the same with W's own top-r singular vectors, √(Σ_{i≤r} σ_i(W)²);
    - ``proj_random``: the same with those of a Gaussian random matrix (``seed``);
    - ``w_norm``: ‖W‖_F;
    - ``amplification``: delta_norm / proj_delta (≈ 21.5 for r = 4 in the paper).

    ``r`` defaults to the numerical rank of ΔW.
    """
    w, d = _as_float64(W), _as_float64(delta)
    if w.ndim != 2 or w.shape != d.shape:
        raise ValueError(f"W and delta must be matrices of one shape: {w.shape} vs {d.shape}")
    if r is None:
        r = int(np.linalg.matrix_rank(d))
    if not 1 <= r <= min(w.shape):
        raise ValueError(f"r: must lie in [1, {min(w.shape)}], got {r}")
    delta_norm = float(np.linalg.norm(d))
    proj_delta = _projection_norm(w, d, r)
    sigma = np.linalg.svd(w, compute_uv=False)
    random = np.random.default_rng(seed).standard_normal(w.shape)
    return {
        "delta_norm": delta_norm,
        "proj_delta": proj_delta,
        "proj_w": float(np.sqrt(np.sum(sigma[:r] ** 2))),
        "proj_random": _projection_norm(w, random, r),
        "w_norm": float(np.linalg.norm(w)),
        "amplification": delta_norm / proj_delta if proj_delta > 0 else float("inf"),
    }


def _base_weight(model: nn.Module, module: str) -> torch.Tensor:
    """W0 of `module` in `model`; accepts a bare encoder (names without the task prefix)."""
    names = [module]
    prefix = getattr(model, "base_model_prefix", "")
    if prefix and module.startswith(prefix + "."):
        names.append(module[len(prefix) + 1:])
    for name in names:
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            continue
        if isinstance(layer, LoRALinear) and layer.merged:
            raise ValueError(
                f"{name} has its LoRA update merged into the weight: pass the base model "
                "(or unmerge_lora(model) first)"
            )
        return layer.weight
    raise ValueError(
        f"the model ({type(model).__name__}) has no module {module!r}: load it with "
        "AutoModelForSequenceClassification, as the adapter was trained"
    )


def amplification_table(
    model: nn.Module,
    adapter_path: str | os.PathLike,
    weight_type: str = "q",
    seed: int = 0,
) -> pd.DataFrame:
    """Table 7 (§7.3) for every layer of one weight type: `amplification` of W0 (from the base
    `model`, before LoRA or unmerged) and ΔW = B A · α/r (from the adapter), at the adapter's r.

    Columns ``layer, weight_type, r, delta_norm, proj_delta, proj_w, proj_random, w_norm,
    amplification``. The random control uses the same ``seed`` for every layer.
    """
    matrices = adapter_matrices(adapter_path)
    rows = []
    for (layer, wtype), m in sorted(matrices.items()):
        if wtype != weight_type:
            continue
        delta = (_as_float64(m["B"]) @ _as_float64(m["A"])) * m["scaling"]
        w0 = _base_weight(model, m["module"])
        rows.append({
            "layer": layer, "weight_type": wtype, "r": m["r"],
            **amplification(w0, delta, r=m["r"], seed=seed),
        })
    if not rows:
        types = sorted({t for _, t in matrices})
        raise ValueError(f"the adapter has no {weight_type!r} matrices; it has {types}")
    return pd.DataFrame(rows)


def subspace_runs(runs_dir: str | os.PathLike) -> dict[str, dict]:
    """The completed Wq,Wv runs a sweep made for §7 on its Table 6 task, by role:
    ``r8`` and ``r64`` (first seed), ``r64_other_seed``, and ``ranks`` (every rank, first seed).
    Each entry has the run's adapter path, rank, seed and model."""
    from .results import load_records

    df = load_records(runs_dir)
    if df.empty:
        raise FileNotFoundError(f"no run records under {runs_dir}")
    qv = df[(df["status"] == "completed") & (df["weight_type"] == "Wq,Wv")
            & df["tags"].map(lambda t: "table6" in t or "subspace" in t)]
    if qv.empty:
        raise FileNotFoundError(f"no completed Wq,Wv Table 6 runs under {runs_dir}")
    first_seed = qv["seed"].min()

    def entry(row) -> dict:
        return {"adapter": os.path.join(runs_dir, row.run_id, "adapter.safetensors"),
                "r": int(row.r), "seed": int(row.seed), "model": row.model, "task": row.task}

    first = {int(row.r): entry(row) for row in qv[qv["seed"] == first_seed].itertuples()}
    others = [entry(row) for row in qv[(qv["seed"] != first_seed) & (qv["r"] == 64)].itertuples()]
    missing = [k for k in (8, 64) if k not in first]
    if missing or not others:
        raise FileNotFoundError(
            f"{runs_dir} lacks Wq,Wv runs for r={missing or ''} "
            f"{'' if others else 'and an r=64 run with a second seed'} (paper §7.2 needs both)")
    return {"r8": first[8], "r64": first[64], "r64_other_seed": others[0],
            "ranks": dict(sorted(first.items()))}


def subspace_findings(fig3: pd.DataFrame, fig4: pd.DataFrame, amp: pd.DataFrame, d: int) -> str:
    """A paragraph, from the numbers, on §7.2–7.3's findings: the top direction is shared
    between ranks (φ > 0.5), little beyond it; seeds share few directions beyond chance; ΔW
    amplifies directions W does not emphasise, more so at small r."""
    top = fig3[(fig3["i"] == 1) & (fig3["j"] == 1)]
    corner = fig3[(fig3["i"] == 8) & (fig3["j"] == 8)]
    parts = [
        f"Between the r=8 and r=64 adapters, the top direction's similarity φ(1,1) has median "
        f"{top['phi'].median():.2f} over layers and weight types (range {top['phi'].min():.2f}–"
        f"{top['phi'].max():.2f}; above 0.5 in {(top['phi'] > 0.5).sum()} of {len(top)}); "
        f"φ(8,8) has median {corner['phi'].median():.2f}, against {8 / d:.3f} expected for random "
        f"subspaces (max(i, j)/d).",
    ]
    seeds = fig4[(fig4["i"] == fig4["j"]) & fig4["i"].isin([1, 8, 64])]
    if not seeds.empty:
        by_i = seeds.groupby("i")["phi"].median()
        parts.append("Two r=64 runs that differ only in the seed: median φ(i,i) " + ", ".join(
            f"{v:.2f} at i={i} (random {i / d:.3f})" for i, v in by_i.items()) + ".")
        if all(v < 2 * i / d + 0.05 for i, v in by_i.items()):
            parts.append("The two seeds' A matrices are hardly closer than random ones: A moves little "
                         "from its random initialisation in a short run, because its gradient is "
                         "proportional to B, which starts at zero (§4.1). φ on A then reflects the "
                         "initialisation more than what was learned.")
    parts.append("As in the paper, the top direction is shared across ranks."
                 if top["phi"].median() > 0.5 else
                 "Unlike the paper's GPT-3, the top direction is not consistently shared here.")
    if not amp.empty:
        med = amp.groupby("r")["amplification"].median()
        parts.append("Amplification ‖ΔW‖/‖UᵀWV‖ (median over layers): " + ", ".join(
            f"{v:.1f} at r={r}" for r, v in med.items()) + ". "
            + ("It shrinks as r grows, as in the paper (≈21.5 at r=4, ≈2 at r=64 on GPT-3)."
               if len(med) > 1 and med.iloc[0] > med.iloc[-1] else
               "It does not shrink with r here, unlike the paper."))
        rel = (amp["proj_delta"] / amp["proj_w"]).median()
        rnd = (amp["proj_random"] / amp["proj_w"]).median()
        parts.append(f"‖UᵀWV‖ on ΔW's top directions is {rel:.1%} of the same projection on W's own top "
                     f"directions (a random subspace: {rnd:.1%}): "
                     + ("ΔW emphasises directions W does not, as the paper finds." if rel < 0.5 else
                        "ΔW largely follows W's top directions, unlike the paper."))
    return " ".join(parts)
