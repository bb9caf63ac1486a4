"""The shared battery over every registered combiner, and each combiner's own maths."""

import pytest
import torch

from meltr.combine import COMBINERS, MetaLossTransformer, build_combiner

TASKS = ("decoder", "joint", "m_joint", "align", "m_align", "cmlm", "cmfm", "m_decoder")
# Table 7's scheme (E) of MELTR, as the shipped config reproduce/table7 gives it to the manual combiner.
SCHEME_E = {"joint": 1, "m_joint": 1, "align": 1, "m_align": 1, "cmlm": 1, "cmfm": 0, "decoder": 8, "m_decoder": 8}
SMALL = {"meltr": {"d_model": 16, "mlp_hidden": 8, "ff_dim": 32, "num_heads": 2}, "manual": {"weights": SCHEME_E}}


def build(name, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return build_combiner(name, TASKS, primary_task="decoder", **SMALL.get(name, {})).to(dtype)


def losses(*shape, seed=1, dtype=torch.float32):
    return torch.rand(*shape, len(TASKS), generator=torch.Generator().manual_seed(seed), dtype=dtype) * 3


@pytest.mark.parametrize("name", COMBINERS.names())
class TestEveryCombiner:
    def test_shapes_batch_level_and_per_sample(self, name):
        combiner = build(name)
        assert combiner(losses()).shape == ()
        assert combiner.combine(losses(5)).shape == (5,)
        assert combiner(losses(5)).shape == ()
        assert combiner.sensitivity(losses()).shape == (len(TASKS),)
        assert combiner.sensitivity(losses(5)).shape == (5, len(TASKS))

    def test_mapping_input_equals_tensor_input(self, name):
        combiner = build(name)
        values = losses(4)
        mapping = {t: values[:, i] for i, t in enumerate(TASKS)}
        torch.testing.assert_close(combiner(mapping), combiner(values))

    def test_finite_and_deterministic_under_a_seed(self, name):
        values = losses(6)
        first, second = build(name, seed=3)(values), build(name, seed=3)(values)
        assert torch.isfinite(first)
        assert first.item() == second.item()

    def test_per_sample_mean_is_the_mean_of_rows(self, name):
        combiner = build(name)
        values = losses(3)
        rows = torch.stack([combiner.combine(row) for row in values])
        torch.testing.assert_close(combiner(values), rows.mean())

    def test_sensitivity_matches_float64_finite_differences(self, name):
        combiner = build(name, dtype=torch.float64).eval()
        point = losses(dtype=torch.float64)
        got = combiner.sensitivity(point)
        eps = 1e-6
        for t in range(len(TASKS)):
            step = torch.zeros_like(point)
            step[t] = eps
            numeric = (combiner.combine(point + step) - combiner.combine(point - step)) / (2 * eps)
            assert got[t].item() == pytest.approx(numeric.item(), rel=1e-5, abs=1e-8)

    def test_task_mismatch_is_an_error_naming_the_task(self, name):
        combiner = build(name)
        mapping = {t: torch.tensor(1.0) for t in TASKS if t != "cmfm"}
        with pytest.raises(ValueError, match="cmfm"):
            combiner(mapping)
        with pytest.raises(ValueError, match=r"\[T\] or \[B, T\]"):
            combiner(torch.zeros(3))


def test_fixed_combiners_have_no_meta_parameters_and_their_weights_as_sensitivity():
    for name, expected in [("single_task", [1, 0, 0, 0, 0, 0, 0, 0]), ("equal_weight", [1] * 8)]:
        combiner = build(name)
        assert combiner.meta_parameters() == []
        assert combiner.sensitivity(losses()).tolist() == expected
    scheme_e = build("manual")
    assert scheme_e.sensitivity(losses()).tolist() == [SCHEME_E[t] for t in TASKS]


def test_manual_weights_by_mapping_and_errors():
    combiner = build_combiner("manual", TASKS, weights={"decoder": 2.0, "cmfm": 0.5})
    value = combiner(torch.ones(len(TASKS)))
    assert value.item() == pytest.approx(2.5)
    with pytest.raises(ValueError, match="unknown task"):
        build_combiner("manual", TASKS, weights={"decoderr": 1.0})
    with pytest.raises(ValueError, match="give `weights`"):
        build_combiner("manual", TASKS)
    with pytest.raises(ValueError, match="expected 8 weights"):
        build_combiner("manual", TASKS, weights=[1.0, 2.0])


def test_unknown_combiner_lists_the_known_ones():
    with pytest.raises(KeyError, match="choose one of: equal_weight, learned_linear"):
        build_combiner("meltrr", TASKS)


def test_learned_linear_is_projected_to_non_negative_weights():
    combiner = build("learned_linear")
    with torch.no_grad():
        combiner.weights[0] = -1.0
    combiner.project_()
    assert combiner.weights.min().item() == 0.0


def test_meltr_defaults_are_the_official_univl_setting():
    combiner = MetaLossTransformer(TASKS)
    layer = combiner.encoder.layers[0]
    assert combiner.task_embedding.weight.shape == (len(TASKS), 256)
    assert combiner.scale_embedding[0].out_features == 128
    assert layer.linear1.out_features == 512
    assert layer.self_attn.num_heads == 8
    assert len(combiner.encoder.layers) == 1
    assert combiner.head.bias is None


def test_meltr_reads_task_identity_not_only_values():
    """Equal losses get different weights because of the task embedding; without it they would not."""
    combiner = build("meltr")
    sensitivity = combiner.sensitivity(torch.ones(len(TASKS)))
    assert sensitivity.std() > 1e-2 * sensitivity.abs().mean()
    with torch.no_grad():
        combiner.task_embedding.weight.zero_()
    blind = combiner.sensitivity(torch.ones(len(TASKS)))
    torch.testing.assert_close(blind, blind.mean().expand_as(blind))


def test_primary_task_must_be_a_task():
    with pytest.raises(ValueError, match="primary_task 'caption'"):
        build_combiner("meltr", TASKS, primary_task="caption")
