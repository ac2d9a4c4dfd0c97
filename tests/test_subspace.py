"""Tests of lora_nb.subspace (paper §7.2-7.3) and of claim C5 (lora_nb.subspace_claims) on matrices
with known answers."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from lora_nb import claims
from lora_nb.subspace import (
    adapter_matrices,
    amplification,
    amplification_table,
    random_frame,
    random_similarity,
    random_update,
    seed_pairs,
    similarity_by_layer,
    similarity_by_seed,
    subspace_runs,
    subspace_similarity,
)
from lora_nb.subspace_claims import (
    amplification_comparison,
    bootstrap_units,
    paper_table7,
    similarity_comparisons,
    subspace_claims,
    subspace_findings,
)


def _orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return q


# --------------------------------------------------------------------------- §7.2: φ


def test_identical_subspaces_give_one_everywhere():
    a = np.random.default_rng(0).standard_normal((8, 64))
    phi = subspace_similarity(a, a)
    assert phi.shape == (8, 8)
    np.testing.assert_allclose(np.diag(phi), 1.0, atol=1e-12)
    # Same singular basis: top-i ⊂ top-j, so ‖U_iᵀ U_j‖² = min(i, j) for every pair.
    np.testing.assert_allclose(phi, 1.0, atol=1e-12)


def test_other_basis_of_same_row_space():
    rng = np.random.default_rng(1)
    a1 = rng.standard_normal((6, 50))
    m = rng.standard_normal((6, 6)) + 3 * np.eye(6)
    assert abs(np.linalg.det(m)) > 1e-3
    phi = subspace_similarity(a1, m @ a1)
    assert phi[-1, -1] == pytest.approx(1.0, abs=1e-10)


def test_nested_subspaces_of_different_rank():
    """An r = 4 row space inside an r = 8 one (the Figure 3 situation): φ(4, 8) = 1."""
    rng = np.random.default_rng(2)
    a8 = rng.standard_normal((8, 40))
    a4 = rng.standard_normal((4, 8)) @ a8
    phi = subspace_similarity(a4, a8)
    assert phi.shape == (4, 8)
    assert phi[3, 7] == pytest.approx(1.0, abs=1e-10)
    assert subspace_similarity(a8, a4)[7, 3] == pytest.approx(1.0, abs=1e-10)


def test_orthogonal_row_spaces_give_zero():
    rng = np.random.default_rng(3)
    basis = _orthogonal(32, rng)
    a1 = rng.standard_normal((4, 4)) @ basis[:4]
    a2 = rng.standard_normal((8, 8)) @ basis[4:12]
    np.testing.assert_allclose(subspace_similarity(a1, a2), 0.0, atol=1e-12)


def test_random_pair_near_expectation():
    """E φ(i, j) = max(i, j) / d for independent random subspaces."""
    d = 512
    phis = np.stack([random_similarity(8, 8, d, seed=s) for s in range(8)])
    assert phis[:, 7, 7].mean() == pytest.approx(8 / d, rel=0.25)
    i = np.arange(1, 9)
    expected = np.maximum.outer(i, i) / d
    np.testing.assert_allclose(phis.mean(axis=0), expected, atol=0.01)


def test_range_shape_and_inputs():
    rng = np.random.default_rng(4)
    a1 = torch.randn(5, 30, generator=torch.Generator().manual_seed(0))
    a2 = rng.standard_normal((7, 30)).astype(np.float32)
    phi = subspace_similarity(a1, a2)
    assert phi.shape == (5, 7) and phi.dtype == np.float64
    assert np.all((phi >= 0) & (phi <= 1))
    # φ is symmetric under swapping the arguments.
    np.testing.assert_allclose(subspace_similarity(a2, a1), phi.T, atol=1e-12)
    with pytest.raises(ValueError, match="different spaces"):
        subspace_similarity(a1, rng.standard_normal((5, 31)))
    with pytest.raises(ValueError, match="exceeds"):
        subspace_similarity(rng.standard_normal((10, 4)), rng.standard_normal((2, 4)))


def test_random_similarity_is_seeded():
    np.testing.assert_array_equal(random_similarity(3, 4, 20, 7), random_similarity(3, 4, 20, 7))
    assert not np.allclose(random_similarity(3, 4, 20, 7), random_similarity(3, 4, 20, 8))


# --------------------------------------------------------------------------- §7.3: amplification


def _planted_w(d: int, seed: int):
    rng = np.random.default_rng(seed)
    sigma = np.concatenate([[10.0, 7.0, 5.0, 3.0], np.linspace(1.0, 0.1, d - 4)])
    u, v = _orthogonal(d, rng), _orthogonal(d, rng)
    return u @ np.diag(sigma) @ v.T, u, sigma, v


def test_amplification_planted_rank_one():
    w, u, sigma, v = _planted_w(64, 0)
    k, c = 2, 4.0  # ΔW = c · u_k v_kᵀ amplifies W's third direction (σ = 5)
    out = amplification(w, c * np.outer(u[:, k], v[:, k]), r=1)
    assert out["delta_norm"] == pytest.approx(c)
    assert out["proj_delta"] == pytest.approx(sigma[k])
    assert out["amplification"] == pytest.approx(c / sigma[k])
    assert out["proj_w"] == pytest.approx(sigma[0])
    assert out["w_norm"] == pytest.approx(np.sqrt(np.sum(sigma**2)))


def test_amplification_planted_rank_two_default_r():
    w, u, sigma, v = _planted_w(64, 1)
    delta = 3.0 * np.outer(u[:, 1], v[:, 1]) - 0.5 * np.outer(u[:, 5], v[:, 5])
    out = amplification(torch.tensor(w, dtype=torch.float64), torch.tensor(delta), seed=3)
    assert out["proj_delta"] == pytest.approx(np.hypot(sigma[1], sigma[5]))
    assert out["proj_w"] == pytest.approx(np.hypot(sigma[0], sigma[1]))
    assert out["amplification"] == pytest.approx(np.hypot(3.0, 0.5) / np.hypot(sigma[1], sigma[5]))


def test_amplification_of_w_own_directions_is_one():
    """ΔW = the top-r part of W: proj_delta = proj_w and ‖ΔW‖_F / proj_delta = 1."""
    w, u, sigma, v = _planted_w(48, 2)
    top = u[:, :3] @ np.diag(sigma[:3]) @ v[:, :3].T
    out = amplification(w, top, r=3)
    assert out["proj_delta"] == pytest.approx(out["proj_w"])
    assert out["amplification"] == pytest.approx(1.0)


def test_random_projection_is_small_for_large_d():
    w, *_ = _planted_w(256, 3)
    out = amplification(w, w, r=4, seed=0)
    # E ‖Uᵀ W V‖² = r² ‖W‖² / d² for random U, V: about 0.1 here, against proj_w ≈ 13.4.
    assert out["proj_random"] < 0.1 * out["proj_w"]
    assert out["proj_random"] < 5 * 4 * out["w_norm"] / 256
    assert amplification(w, w, r=4, seed=0)["proj_random"] == out["proj_random"]


def test_amplification_rejects_bad_input():
    with pytest.raises(ValueError, match="one shape"):
        amplification(np.eye(4), np.eye(5))
    with pytest.raises(ValueError, match="r:"):
        amplification(np.eye(4), np.eye(4), r=5)


# --------------------------------------------------------------------------- adapter files


@pytest.fixture(scope="module")
def tiny_adapters(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    import lora_nb

    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=64, num_labels=2,
    )
    torch.manual_seed(0)
    base = transformers.AutoModelForSequenceClassification.from_config(config)
    out = {"base": copy.deepcopy(base), "dir": tmp_path_factory.mktemp("adapters")}
    for r in (2, 4):
        model = copy.deepcopy(base)
        lora_nb.prepare_model(model, "lora", lora_nb.LoRAConfig(targets=("q", "v"), r=r, alpha=8))
        with torch.no_grad():
            for layer in lora_nb.lora.lora_layers(model).values():
                layer.lora_B.normal_(0.0, 0.5)
        out[r] = model
        out[f"path{r}"] = lora_nb.save_adapter(model, out["dir"] / f"r{r}.safetensors")
    return out


def test_adapter_matrices_parses_layers_and_types(tiny_adapters):
    from lora_nb.lora import lora_layers

    mats = adapter_matrices(tiny_adapters["path4"])
    assert set(mats) == {(0, "q"), (0, "v"), (1, "q"), (1, "v")}
    layers = lora_layers(tiny_adapters[4])
    for (layer, wtype), m in mats.items():
        kind = {"q": "query", "v": "value"}[wtype]
        assert m["module"] == f"bert.encoder.layer.{layer}.attention.self.{kind}"
        assert m["scaling"] == pytest.approx(2.0) and m["r"] == 4
        assert m["A"].shape == (4, 32) and m["B"].shape == (32, 4)
        torch.testing.assert_close(m["A"], layers[m["module"]].lora_A.detach())
        torch.testing.assert_close(m["B"], layers[m["module"]].lora_B.detach())


def test_similarity_by_layer(tiny_adapters):
    same = similarity_by_layer(tiny_adapters["path4"], tiny_adapters["path4"])
    assert list(same.columns) == ["layer", "weight_type", "i", "j", "phi"]
    assert len(same) == 2 * 2 * 4 * 4
    assert set(zip(same.layer, same.weight_type)) == {(0, "q"), (0, "v"), (1, "q"), (1, "v")}
    np.testing.assert_allclose(same.loc[same.i == same.j, "phi"], 1.0, atol=1e-6)

    mixed = similarity_by_layer(tiny_adapters["path2"], tiny_adapters["path4"], weight_types=("v",))
    assert set(mixed.weight_type) == {"v"} and len(mixed) == 2 * 2 * 4
    assert mixed.i.max() == 2 and mixed.j.max() == 4
    assert mixed.phi.between(0, 1).all()
    mats2, mats4 = adapter_matrices(tiny_adapters["path2"]), adapter_matrices(tiny_adapters["path4"])
    row = mixed[(mixed.layer == 1)].set_index(["i", "j"]).phi
    expected = subspace_similarity(mats2[(1, "v")]["A"], mats4[(1, "v")]["A"])
    np.testing.assert_allclose(row.loc[(2, 3)], expected[1, 2])

    b = similarity_by_layer(tiny_adapters["path4"], tiny_adapters["path4"], matrix="B")
    np.testing.assert_allclose(b.loc[b.i == b.j, "phi"], 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="share no layer"):
        similarity_by_layer(tiny_adapters["path4"], tiny_adapters["path4"], weight_types=("k",))


def test_amplification_table_uses_base_weight(tiny_adapters):
    from lora_nb.lora import lora_layers, merge_lora

    base, path = tiny_adapters["base"], tiny_adapters["path4"]
    table = amplification_table(base, path, weight_type="q")
    assert list(table.columns) == [
        "layer", "weight_type", "r", "delta_norm", "proj_delta", "proj_w", "proj_random",
        "w_norm", "amplification", "proj_random_update", "amplification_random",
    ]
    assert table.layer.tolist() == [0, 1] and (table.r == 4).all()
    layers = lora_layers(tiny_adapters[4])
    for row in table.itertuples():
        name = f"bert.encoder.layer.{row.layer}.attention.self.query"
        lora = layers[name]
        assert row.delta_norm == pytest.approx(lora.delta_weight().norm().item(), rel=1e-5)
        w0 = base.get_submodule(name).weight.detach().double().numpy()
        u, _, vh = np.linalg.svd(lora.delta_weight().double().detach().numpy())
        assert row.proj_delta == pytest.approx(np.linalg.norm(u[:, :4].T @ w0 @ vh[:4].T))
        assert row.w_norm == pytest.approx(np.linalg.norm(w0))
        assert row.amplification == pytest.approx(row.delta_norm / row.proj_delta)

    # An unmerged LoRA model holds W0 in `weight`: same table. A bare encoder works too.
    pd.testing.assert_frame_equal(amplification_table(tiny_adapters[4], path), table)
    pd.testing.assert_frame_equal(amplification_table(base.bert, path), table)
    # A merged one does not: refuse rather than project W0 + ΔW.
    merged = merge_lora(copy.deepcopy(tiny_adapters[4]).eval())
    with pytest.raises(ValueError, match="merged"):
        amplification_table(merged, path)
    with pytest.raises(ValueError, match="no 'k'"):
        amplification_table(base, path, weight_type="k")


def test_random_update_keeps_rank_and_norm_with_random_directions():
    w, u, sigma, v = _planted_w(64, 4)
    delta = 3.0 * np.outer(u[:, 10], v[:, 10]) + 1.0 * np.outer(u[:, 20], v[:, 20])
    rand = random_update(delta, r=2, rng=np.random.default_rng(0))
    np.testing.assert_allclose(np.linalg.svd(rand, compute_uv=False)[:3], [3.0, 1.0, 0.0], atol=1e-10)
    assert np.linalg.norm(rand) == pytest.approx(np.linalg.norm(delta))
    # Its top-2 singular vectors are the random frames: the projection is ‖U_randᵀ W V_rand‖_F.
    rng = np.random.default_rng(0)
    u_r, v_r = random_frame(64, 2, rng), random_frame(64, 2, rng)
    assert amplification(w, rand, r=2)["proj_delta"] == pytest.approx(np.linalg.norm(u_r.T @ w @ v_r))
    assert not np.allclose(rand, delta)


def test_random_update_projection_matches_its_expectation():
    """For uniformly random r-frames, E ‖UᵀWV‖_F² = r² ‖W‖_F² / (m n): the baseline is what a
    random update of the same rank gives, and ΔW aligned with a direction of W beats it."""
    w, u, sigma, v = _planted_w(96, 5)
    out = amplification(w, 2.0 * np.outer(u[:, 4], v[:, 4]), r=1, seed=1, n_random=400)
    expected = np.linalg.norm(w) / 96  # √(r² ‖W‖² / d²) for r = 1
    assert out["proj_random_update"] == pytest.approx(expected, rel=0.35)
    assert out["proj_delta"] == pytest.approx(sigma[4]) and out["proj_delta"] > 5 * out["proj_random_update"]
    assert out["amplification_random"] == pytest.approx(out["delta_norm"] / out["proj_random_update"])
    q = random_frame(50, 5, np.random.default_rng(2))
    np.testing.assert_allclose(q.T @ q, np.eye(5), atol=1e-12)


# --------------------------------------------------------------------------- claim C5


def test_seed_pairs_leave_out_shared_seeds_when_they_can():
    assert seed_pairs([0, 1], [0, 1]) == ([(0, 1), (1, 0)], True)
    assert seed_pairs([0], [0, 1, 2]) == ([(0, 1), (0, 2)], True)
    assert seed_pairs([0], [0]) == ([(0, 0)], False)


def test_bootstrap_units_two_levels():
    point, lo, hi = bootstrap_units([np.array([1.0, 3.0]), np.array([2.0]), np.array([4.0, 4.0, 4.0])], 500)
    assert point == pytest.approx((2.0 + 2.0 + 4.0) / 3)  # mean over units of each unit's mean
    assert 1.0 <= lo < point < hi <= 4.0
    _, lo, hi = bootstrap_units([np.array([x]) for x in (-1.0, 1.0, -0.5, 0.5, -2.0, 2.0)], 500)
    assert lo < 0 < hi
    with pytest.raises(ValueError, match="no units"):
        bootstrap_units([])


def _a_matrices(seeds, r, d, rng, shared=None, weight=0.0):
    """{seed: {(layer, wt): A}}: random A (r × d) with `shared` rows mixed in with `weight`."""
    out = {}
    for s in seeds:
        out[s] = {}
        for layer in range(3):
            for wt in ("q", "v"):
                a = rng.standard_normal((r, d))
                if shared is not None:
                    a[: len(shared[(layer, wt)])] += weight * shared[(layer, wt)]
                out[s][(layer, wt)] = a
    return out


def test_similarity_comparisons_planted_random_and_orthogonal():
    rng = np.random.default_rng(0)
    d = 96
    top = {(layer, wt): 40 * rng.standard_normal((1, d)) for layer in range(3) for wt in ("q", "v")}
    # A shared top direction at both ranks and every seed: φ(1, 1) near 1, far above random.
    planted = similarity_comparisons(_a_matrices((0, 1), 4, d, rng, top, 1.0), _a_matrices((0, 1), 16, d, rng, top, 1.0),
                                     "mnli", (4, 16), n_random=4, n_boot=300)
    assert [c.verdict for c in planted] == [claims.REPRODUCED, claims.REPRODUCED]
    assert planted[0].a_stat > 0.9 and planted[0].b_stat < 0.05
    assert planted[0].a == "A(r=4) vs A(r=16): φ(1,1)" and planted[0].kind == "superior"
    assert planted[0].seeds == "2 × 2 seeds, 2 cross-seed pairs" and planted[0].claim == "C5"
    assert planted[0].lo <= planted[0].difference <= planted[0].hi
    # Independent random matrices: no verdict either way.
    noise = similarity_comparisons(_a_matrices((0, 1, 2), 4, d, rng), _a_matrices((0, 1, 2), 16, d, rng),
                                   n_random=4, n_boot=300, seed=3)
    assert [c.verdict for c in noise] == [claims.INCONCLUSIVE, claims.INCONCLUSIVE]
    # Row spaces kept orthogonal: φ = 0 everywhere, below random.
    basis = _orthogonal(d, rng)
    small = {s: {(layer, wt): rng.standard_normal((4, 4)) @ basis[:4] for layer in range(3) for wt in ("q", "v")}
             for s in (0, 1)}
    large = {s: {(layer, wt): rng.standard_normal((16, 16)) @ basis[40:56] for layer in range(3) for wt in ("q", "v")}
             for s in (0, 1)}
    apart = similarity_comparisons(small, large, n_random=4, n_boot=300)
    assert [c.verdict for c in apart] == [claims.NOT_REPRODUCED, claims.NOT_REPRODUCED]
    assert apart[0].a_stat == pytest.approx(0.0, abs=1e-12)


def _amp_rows(r, aligned, seeds=(0, 1, 2), layers=4, d=64):
    """amplification() rows: ΔW on middle directions of W (aligned) or on random ones."""
    rows = []
    for layer in range(layers):
        w, u, sigma, v = _planted_w(d, 10 + layer)
        for seed in seeds:
            rng = np.random.default_rng(100 * layer + seed)
            if aligned:
                idx = rng.choice(np.arange(10, 30), size=r, replace=False)
                delta = u[:, idx] @ np.diag(rng.uniform(1, 2, r)) @ v[:, idx].T
            else:
                delta = random_update(u[:, :r] @ v[:, :r].T, r, rng)
            rows.append({"layer": layer, "weight_type": "q", "r": r, "seed": seed,
                         **amplification(w, delta, r=r, seed=seed)})
    return pd.DataFrame(rows)


def test_amplification_comparison_aligned_beats_random_update():
    aligned = amplification_comparison(_amp_rows(2, True), 2, "mnli", n_boot=300)
    assert aligned.verdict == claims.REPRODUCED and aligned.a_stat > 2 * aligned.b_stat
    assert aligned.a == "ΔWq r=2: ‖UᵀWV‖ as % of W's top-r" and aligned.seeds == "3"
    assert aligned.note == "4 layers × 3 seeds"
    rand = amplification_comparison(_amp_rows(2, False), 2, n_boot=300)
    assert rand.verdict == claims.INCONCLUSIVE
    with pytest.raises(ValueError, match="r = 4"):
        amplification_comparison(_amp_rows(2, True), 4)
    paper = paper_table7()
    at4 = amplification_comparison(_amp_rows(4, True, layers=2), 4, paper=paper, n_boot=100)
    assert "paper (GPT-3 175B, layer 48): 1.5% vs 0.09%" in at4.note  # 0.32 / 21.67, 0.02 / 21.67


def test_paper_table7_amplification():
    paper = paper_table7().set_index("r")
    assert paper.at[4, "amplification"] == pytest.approx(6.91 / 0.32)  # the text's "21.5"
    assert paper.at[64, "amplification"] == pytest.approx(3.57 / 1.90)  # "about 2"


def _c5(verdicts: dict[str, str], strong: bool = False) -> pd.DataFrame:
    """C5's rows; `strong`: effects far above their controls (ratios 4× and 3×) instead of ~1×."""
    rows = {
        "phi": claims.Comparison("C5", "mnli", "A(r=8) vs A(r=64): φ(1,1)", "random Gaussian A, same shapes",
                                 "superior", 0.0108 if strong else 0.0031, 0.0027, 0.0004, -0.0002, 0.0011,
                                 "3 × 3 seeds, 6 cross-seed pairs", verdicts["phi"], ""),
        "amp": claims.Comparison("C5", "mnli", "ΔWq r=4: ‖UᵀWV‖ as % of W's top-r", "random update, same rank and norm",
                                 "superior", 11.7 if strong else 3.9, 3.9, 0.01, -0.3, 0.3, "3", verdicts["amp"], ""),
    }
    return claims.comparisons_table(list(rows.values()))


def test_findings_follow_the_verdicts():
    amp = pd.DataFrame({"r": [4, 4, 64], "amplification": [3.7, 3.9, 0.1], "amplification_random": [3.8, 3.8, 0.1]})
    text = subspace_findings(_c5({"phi": "inconclusive", "amp": "inconclusive"}), amp, paper_table7())
    assert "as the paper finds" not in text and "emphasises" not in text
    assert "median 0.003 against 0.003 for random Gaussian A" in text
    assert "ours − random (mean, 95% interval) = +0.000 [-0.000, +0.001]: inconclusive" in text
    assert "3.90% of W's own top-r projection" in text and "not shown here that ΔW amplifies" in text
    assert "3.8 at r = 4" in text and "(paper, GPT-3 layer 48: 21.6 at r = 4, 1.88 at r = 64)" in text
    assert text.endswith("Claim C5: inconclusive at this scale.")

    text = subspace_findings(_c5({"phi": "reproduced", "amp": "reproduced"}, strong=True))
    assert text.count("as the paper finds") == 2 and "though the paper's φ(1,1) exceeds 0.5" in text
    assert "4.00× its control" in text and "3.00× its control (the paper: 16× a random matrix's)" not in text
    assert "A moves little" not in text and text.endswith("Claim C5: reproduced (every comparison above).")

    # above chance but near 1× the control: reproduced in direction, not "as the paper finds"
    text = subspace_findings(_c5({"phi": "reproduced", "amp": "reproduced"}), paper=paper_table7())
    assert "as the paper finds" not in text and text.count("but weakly") == 2
    assert "1.00× its control (the paper: 16× a random matrix's)" in text

    text = subspace_findings(_c5({"phi": "not reproduced", "amp": "reproduced"}, strong=True))
    assert "unlike the paper's finding" in text and text.count("as the paper finds") == 1
    assert text.endswith("Claim C5: not reproduced (a comparison goes against the paper).")


# --------------------------------------------------------------------------- the §7 runs


def _record(task, r, seed, targets=("q", "v"), tags=("table6",), status="completed"):
    return {"status": status, "primary_metric": "accuracy", "best_metric": 0.5,
            "config": {"task": task, "method": "lora", "model": "m", "seed": seed, "targets": list(targets),
                       "r": r, "alpha": 8.0, "tags": list(tags), "output_dir": f"/somewhere/runs/x-r{r}-s{seed}"},
            "parameters": {}, "data": {}, "optimizer_steps": 400,  # a curve that levelled off
            "evaluations": [{"step": s, "primary": 0.5, "eval": {}} for s in (100, 200, 300, 400)]}


def _write_runs(root, adapters: dict | None = None, flat: bool = False):
    """Table 6 runs (r 8, 64; seeds 0, 1; plus runs §7 must skip) as run folders or flat records."""
    import json

    runs = root / ("records" if flat else "runs")
    runs.mkdir(parents=True)
    specs = {f"t6-mnli-qv-r{r}-s{s}": _record("mnli", r, s) for r in (8, 64) for s in (0, 1)}
    specs["t6-mnli-q-r8-s0"] = _record("mnli", 8, 0, targets=("q",))
    specs["t6-mnli-qv-r4-s0"] = _record("mnli", 4, 0, status="failed")
    specs["t2-mnli-qv-r2-s0"] = _record("mnli", 2, 0, tags=("table2",))
    for run_id, rec in specs.items():
        content = (adapters or {}).get(run_id, b"adapter")
        if flat:
            (runs / f"{run_id}.json").write_text(json.dumps(rec))
            (root / "adapters").mkdir(exist_ok=True)
            (root / "adapters" / f"{run_id}.safetensors").write_bytes(content)
        else:
            (runs / run_id).mkdir()
            (runs / run_id / "record.json").write_text(json.dumps(rec))
            (runs / run_id / "adapter.safetensors").write_bytes(content)
    return runs


@pytest.mark.parametrize("flat", [False, True], ids=["run folders", "committed records"])
def test_subspace_runs_both_layouts(tmp_path, flat):
    runs = subspace_runs(_write_runs(tmp_path, flat=flat))
    assert sorted(runs["by_rank"]) == [8, 64]  # no Wq-only, failed or Table 2 run
    assert [e["seed"] for e in runs["by_rank"][64]] == [0, 1]
    assert runs["r8"]["run_id"] == "t6-mnli-qv-r8-s0" and runs["r64_other_seed"]["run_id"] == "t6-mnli-qv-r64-s1"
    assert runs["r8"]["num_labels"] == 3 and runs["r8"]["task"] == "mnli"  # from the task, not hard-coded
    expected = (tmp_path / "adapters" / "t6-mnli-qv-r64-s1.safetensors" if flat
                else tmp_path / "runs" / "t6-mnli-qv-r64-s1" / "adapter.safetensors")
    assert runs["r64_other_seed"]["adapter"] == str(expected)


def test_subspace_runs_needs_two_seeds_at_r64(tmp_path):
    runs = _write_runs(tmp_path)
    (runs / "t6-mnli-qv-r64-s1" / "adapter.safetensors").unlink()  # a run without its adapter does not count
    with pytest.raises(FileNotFoundError, match="a second seed at r = 64"):
        subspace_runs(runs)


def test_the_section_7_page_falls_back_to_the_archived_run_only_when_the_default_lacks_adapters(
        tmp_path, monkeypatch):
    from lora_nb import subspace

    with_adapters, without = _write_runs(tmp_path / "a"), tmp_path / "empty"
    without.mkdir()
    monkeypatch.setattr(subspace, "ARCHIVED_SUBSPACE_RUNS", with_adapters)
    monkeypatch.setattr(subspace, "default_runs_dir", lambda: without)
    assert subspace.default_subspace_runs_dir() == with_adapters
    own = _write_runs(tmp_path / "b")
    monkeypatch.setattr(subspace, "default_runs_dir", lambda: own)
    assert subspace.default_subspace_runs_dir() == own  # the run's own adapters come first
    monkeypatch.setattr(subspace, "ARCHIVED_SUBSPACE_RUNS", tmp_path / "gone")
    monkeypatch.setattr(subspace, "default_runs_dir", lambda: without)
    assert subspace.default_subspace_runs_dir() == without  # subspace_runs then says what is missing


@pytest.fixture(scope="module")
def c5_adapters(tmp_path_factory):
    """Real adapter files at r = 8 and r = 64 (seeds 0, 1) of a small BERT (d = 96), B random."""
    transformers = pytest.importorskip("transformers")
    import lora_nb

    config = transformers.BertConfig(vocab_size=50, hidden_size=96, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=32, num_labels=3)
    torch.manual_seed(0)
    base = transformers.AutoModelForSequenceClassification.from_config(config)
    files = {}
    for r in (8, 64):
        for seed in (0, 1):
            torch.manual_seed(seed + 10 * r)
            model = copy.deepcopy(base)
            lora_nb.prepare_model(model, "lora", lora_nb.LoRAConfig(targets=("q", "v"), r=r, alpha=8))
            with torch.no_grad():
                for layer in lora_nb.lora.lora_layers(model).values():
                    layer.lora_B.normal_(0.0, 0.1)
            path = tmp_path_factory.mktemp("a") / "a.safetensors"
            files[f"t6-mnli-qv-r{r}-s{seed}"] = lora_nb.save_adapter(model, path).read_bytes()
    return base, files


def test_subspace_claims_from_adapter_files(tmp_path, c5_adapters, one_thread):
    base, files = c5_adapters
    runs = subspace_runs(_write_runs(tmp_path, adapters=files))
    fig3 = similarity_by_seed(runs["by_rank"][8], runs["by_rank"][64])
    assert sorted(set(zip(fig3.seed_a, fig3.seed_b))) == [(0, 1), (1, 0)]  # cross-seed pairs only
    assert fig3.i.max() == 8 and fig3.j.max() == 64 and len(fig3) == 2 * 2 * 2 * 8 * 64
    fig4 = similarity_by_seed(runs["by_rank"][64], runs["by_rank"][64])
    assert sorted(set(zip(fig4.seed_a, fig4.seed_b))) == [(0, 1)]  # each pair once
    amp = pd.concat([amplification_table(base, e["adapter"], "q").assign(seed=e["seed"])
                     for entries in runs["by_rank"].values() for e in entries], ignore_index=True)
    c5 = subspace_claims(runs, amp, n_random=2, n_boot=200, paper=paper_table7())
    assert list(c5.columns) == list(claims.Comparison.__dataclass_fields__)
    assert list(c5["claim"]) == ["C5"] * 4 and set(c5["task"]) == {"mnli"}
    assert list(c5["b"]) == ["random Gaussian A, same shapes"] * 2 + ["random update, same rank and norm"] * 2
    assert set(c5["verdict"]) <= {claims.REPRODUCED, claims.NOT_REPRODUCED, claims.INCONCLUSIVE}
    assert (c5["lo"] <= c5["hi"]).all()
    for row in c5.itertuples():
        assert row.verdict == claims.verdict(row.lo, row.hi, "superior")
    text = subspace_findings(c5, amp, paper_table7())
    assert "Claim C5:" in text


def test_c5_is_not_testable_on_runs_that_did_not_converge(tmp_path, c5_adapters, one_thread):
    _, files = c5_adapters
    runs = subspace_runs(_write_runs(tmp_path, adapters=files))
    runs["by_rank"][64][1]["converged"] = False
    c5 = subspace_claims(runs, None, n_random=2, n_boot=100)
    assert set(c5["verdict"]) == {claims.NOT_TESTABLE}
    assert all(note.startswith("1 of 4 runs did not converge") for note in c5["note"])
    assert subspace_findings(c5).endswith("so what they learned tests nothing yet.")
