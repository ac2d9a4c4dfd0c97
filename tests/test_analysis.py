"""Tests of lora_nb.analysis (paper §7.2-7.3) on matrices with known answers."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from lora_nb.analysis import (
    adapter_matrices,
    amplification,
    amplification_table,
    random_similarity,
    similarity_by_layer,
    subspace_similarity,
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
        "w_norm", "amplification",
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
