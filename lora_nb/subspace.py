"""Understanding the low-rank updates (Hu et al., 2021, §7.2 and §7.3).

- §7.2, Figures 3 and 4: the normalised subspace similarity φ between the row spaces of two
  learned ``A`` matrices (an r = 8 and an r = 64 run; or two r = 64 runs with different seeds,
  against random Gaussian matrices as a control).
- §7.3, Table 7: how ΔW relates to W. W is projected onto the r-dimensional subspace of ΔW,
  ‖Uᵀ W V‖_F with U, V the top-r left/right singular vectors of ΔW, and compared with the same
  projection onto W's own top-r directions and onto a random matrix's; the amplification factor
  is ‖ΔW‖_F / ‖Uᵀ W V‖_F.
- The runs (`subspace_runs`): the Wq,Wv adapters of the Table 6 runs, from a sweep's runs
  folder or the committed reference run (`report/records` + `report/adapters`).

Everything is computed in float64 numpy. Adapter files are those of `lora_nb.checkpoint`. Claim
C5, each reading against a random baseline, is decided in `lora_nb.subspace_claims`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

import numpy as np
import pandas as pd
import torch
from torch import nn

from .checkpoint import read_adapter
from .lora import TARGET_PATTERNS, LoRALinear
from .rundir import ARCHIVED_SUBSPACE_RUNS, default_runs_dir, display_path, find_adapter

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


def random_frame(n: int, r: int, rng: np.random.Generator) -> np.ndarray:
    """An n × r matrix with orthonormal columns spanning a uniformly random r-dimensional
    subspace (QR of a Gaussian matrix, signs fixed so the distribution is Haar)."""
    q, upper = np.linalg.qr(rng.standard_normal((n, r)))
    return q * np.sign(np.diag(upper))


def random_update(delta: np.ndarray | torch.Tensor, r: int | None = None,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """A random update of the same rank and Frobenius norm as ΔW: U_rand · S · V_randᵀ with
    ΔW's top-r singular values S and uniformly random orthonormal U_rand, V_rand (the control
    of the amplification claim: its top-r singular vectors are U_rand and V_rand)."""
    d = _as_float64(delta)
    if r is None:
        r = int(np.linalg.matrix_rank(d))
    rng = rng or np.random.default_rng(0)
    sigma = np.linalg.svd(d, compute_uv=False)[:r]
    return random_frame(d.shape[0], r, rng) @ np.diag(sigma) @ random_frame(d.shape[1], r, rng).T


def amplification(
    W: np.ndarray | torch.Tensor,
    delta: np.ndarray | torch.Tensor,
    r: int | None = None,
    seed: int = 0,
    n_random: int = 8,
) -> dict[str, float]:
    """How much ΔW amplifies directions of W (paper §7.3, Table 7), in float64.

    - ``delta_norm``: ‖ΔW‖_F;
    - ``proj_delta``: ‖Uᵀ W V‖_F, with U, V the top-r left / right singular vectors of ΔW;
    - ``proj_w``: the same with W's own top-r singular vectors, √(Σ_{i≤r} σ_i(W)²);
    - ``proj_random``: the same with those of a Gaussian random matrix (``seed``; the paper's
      "Random" column);
    - ``proj_random_update``: the same for a random update of ΔW's rank and Frobenius norm
      (`random_update`), mean over ``n_random`` draws (``seed``): its top-r singular vectors
      are random orthonormal frames, so this is the mean of ‖U_randᵀ W V_rand‖_F;
    - ``w_norm``: ‖W‖_F;
    - ``amplification``: delta_norm / proj_delta (≈ 21.5 for r = 4 in the paper);
    - ``amplification_random``: delta_norm / proj_random_update, the factor a random update of
      the same rank and norm would have.

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
    rng = np.random.default_rng(seed)
    random = rng.standard_normal(w.shape)
    proj_random = _projection_norm(w, random, r)
    frames = [(random_frame(w.shape[0], r, rng), random_frame(w.shape[1], r, rng))
              for _ in range(n_random)]
    proj_update = float(np.mean([np.linalg.norm(u.T @ w @ v) for u, v in frames])) if frames else np.nan
    return {
        "delta_norm": delta_norm,
        "proj_delta": proj_delta,
        "proj_w": float(np.sqrt(np.sum(sigma[:r] ** 2))),
        "proj_random": proj_random,
        "proj_random_update": proj_update,
        "w_norm": float(np.linalg.norm(w)),
        "amplification": delta_norm / proj_delta if proj_delta > 0 else float("inf"),
        "amplification_random": delta_norm / proj_update if proj_update > 0 else float("inf"),
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
    amplification, proj_random_update, amplification_random`` (see `amplification`). The random
    controls use ``seed`` + the layer index, so layers get independent draws.
    """
    matrices = adapter_matrices(adapter_path)
    rows = []
    for (layer, wtype), m in sorted(matrices.items()):
        if wtype != weight_type:
            continue
        delta = (_as_float64(m["B"]) @ _as_float64(m["A"])) * m["scaling"]
        w0 = _base_weight(model, m["module"])
        out = amplification(w0, delta, r=m["r"], seed=seed + layer)
        rows.append({
            "layer": layer, "weight_type": wtype, "r": m["r"],
            **{k: out[k] for k in ("delta_norm", "proj_delta", "proj_w", "proj_random", "w_norm",
                                   "amplification", "proj_random_update", "amplification_random")},
        })
    if not rows:
        types = sorted({t for _, t in matrices})
        raise ValueError(f"the adapter has no {weight_type!r} matrices; it has {types}")
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the §7 runs


def subspace_runs(runs_dir: str | os.PathLike) -> dict:
    """The completed Wq,Wv LoRA runs of Table 6 whose adapter is at hand, for §7.

    Reads a sweep's runs folder (``<runs>/<id>/record.json`` + adapter) or the committed
    reference run (``report/records/<id>.json`` + ``report/adapters/<id>.safetensors``), through
    `lora_nb.rundir.find_adapter`. Runs tagged "table6" (or "subspace", an older tag) of the
    Table 6 task count. Returns, by role:

    - ``by_rank``: {r: [one entry per seed, by seed]};
    - ``ranks``: {r: the entry of the first seed};
    - ``r8``, ``r64``: the first seed's entries; ``r64_other_seed``: the second seed's r = 64.

    Each entry: ``run_id, adapter`` (path), ``r, seed, model, task, num_labels`` (the task's).
    """
    from .glue import get_task
    from .tables import completed, load_records

    df = load_records(runs_dir)
    if df.empty:
        raise FileNotFoundError(f"no run records under {display_path(runs_dir)}")
    qv = df[completed(df) & (df["method"] == "lora") & (df["weight_type"] == "Wq,Wv")
            & df["tags"].map(lambda t: "table6" in t or "subspace" in t)].copy()
    qv["adapter"] = [find_adapter(runs_dir, run_id) for run_id in qv["run_id"]]
    qv = qv[qv["adapter"].notna()]
    if qv.empty:
        raise FileNotFoundError(
            f"no completed Wq,Wv Table 6 run with its adapter under {display_path(runs_dir)}")
    task = qv["task"].mode()[0]
    qv = qv[qv["task"] == task].sort_values(["r", "seed"])
    by_rank: dict[int, list[dict]] = {}
    for row in qv.itertuples():
        by_rank.setdefault(int(row.r), []).append({
            "run_id": row.run_id, "adapter": str(row.adapter), "r": int(row.r), "seed": int(row.seed),
            "model": row.model, "task": row.task, "num_labels": get_task(row.task).num_labels,
            "converged": bool(row.converged)})
    missing = [r for r in (8, 64) if r not in by_rank]
    if missing or len(by_rank[64]) < 2:
        raise FileNotFoundError(
            f"{display_path(runs_dir)} lacks Wq,Wv adapters for "
            + (f"r = {missing}" if missing else "a second seed at r = 64")
            + " (Figures 3 and 4 need r = 8 and two seeds of r = 64)")
    ranks = {r: entries[0] for r, entries in sorted(by_rank.items())}
    return {"by_rank": dict(sorted(by_rank.items())), "ranks": ranks, "r8": ranks[8],
            "r64": ranks[64], "r64_other_seed": by_rank[64][1]}


def has_subspace_runs(runs_dir: str | os.PathLike) -> bool:
    """Whether `runs_dir` holds what the §7 page needs (`subspace_runs`)."""
    try:
        subspace_runs(runs_dir)
    except FileNotFoundError:
        return False
    return True


def default_subspace_runs_dir() -> "os.PathLike":
    """Where the §7 page reads adapters when given no runs folder: `rundir.default_runs_dir`
    when it holds them, else the archived 250-step run (`rundir.ARCHIVED_SUBSPACE_RUNS`), whose
    runs did not converge, so that its claim C5 reads "not testable"."""
    runs = default_runs_dir()
    return runs if has_subspace_runs(runs) or not has_subspace_runs(ARCHIVED_SUBSPACE_RUNS) \
        else ARCHIVED_SUBSPACE_RUNS


def seed_pairs(seeds_a: Iterable[int], seeds_b: Iterable[int]) -> tuple[list[tuple[int, int]], bool]:
    """Pairs (seed of run a, seed of run b) to compare, and whether they all differ.

    Runs that share a seed share part of their initialisation: with the same seed, the first
    LoRA module's A at r = 8 is the first 8 rows of A at r = 64 (the same random stream fills
    both). Pairs of one seed are therefore left out whenever other pairs exist."""
    seeds_a, seeds_b = sorted(set(seeds_a)), sorted(set(seeds_b))
    cross = [(s, t) for s in seeds_a for t in seeds_b if s != t]
    return (cross, True) if cross else ([(s, t) for s in seeds_a for t in seeds_b], False)


def similarity_by_seed(runs_a: list[dict], runs_b: list[dict], weight_types: Iterable[str] = ("q", "v"),
                       matrix: str = "A") -> pd.DataFrame:
    """`similarity_by_layer` for every seed pair of two lists of runs (entries of
    `subspace_runs`; pairs that share a seed are left out when others exist, see `seed_pairs`),
    with columns ``seed_a, seed_b`` added. The φ behind Figures 3 and 4."""
    by_seed_a = {e["seed"]: e for e in runs_a}
    by_seed_b = {e["seed"]: e for e in runs_b}
    pairs, _ = seed_pairs(by_seed_a, by_seed_b)
    if runs_a is runs_b or [e["run_id"] for e in runs_a] == [e["run_id"] for e in runs_b]:
        pairs = [(s, t) for s, t in pairs if s < t]  # one run against itself: each pair once
    frames = [similarity_by_layer(by_seed_a[s]["adapter"], by_seed_b[t]["adapter"], weight_types, matrix)
              .assign(seed_a=s, seed_b=t) for s, t in pairs]
    return pd.concat(frames, ignore_index=True)
