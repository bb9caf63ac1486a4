"""Hypergradient scopes: ``last_blocks`` selects the intended parameters, and a scoped hypergradient is the full one
with the primary gradient zeroed outside the scope (``meltr.hypergrad.scope``)."""

from __future__ import annotations

import fnmatch

import pytest
import torch
from backbone_helpers import VOCAB_SIZE, random_batch
from torch.nn.attention import SDPBackend, sdpa_kernel

from meltr.combine import MetaLossTransformer
from meltr.hypergrad import BACKENDS, MetaProblem, build_estimator
from meltr.hypergrad.backends import double_backward
from meltr.hypergrad.scope import last_blocks, transformer_stacks
from meltr.learner import AuxiliaryLearner, select_parameters
from meltr.models import BACKBONES, build_backbone

TWO_BLOCKS = {"univl": {"text_layers": 2, "cross_layers": 2, "decoder_layers": 2}, "violet": {"layers": 2}}


def backbone(name: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone(name, "tiny", vocab_size=VOCAB_SIZE, **overrides)


def univl_two_blocks() -> torch.nn.Module:
    return backbone("univl", **TWO_BLOCKS["univl"])


def block_of(name: str) -> tuple[str, int] | None:
    """``("text_encoder", 1)`` for ``text_encoder.blocks.1.attention.query.weight``."""
    if ".blocks." not in name:
        return None
    stack, rest = name.split(".blocks.", 1)
    return stack, int(rest.split(".", 1)[0])


def test_univl_stacks_and_the_last_block_of_each():
    model = univl_two_blocks()
    assert transformer_stacks(model) == {"text_encoder": 2, "video_encoder": 1, "cross_encoder": 2, "decoder": 2}
    selected = select_parameters(model, last_blocks(model, 1))
    depths = transformer_stacks(model)
    for name, _ in model.named_parameters():
        block = block_of(name)
        if block is not None:
            expected = block[1] == depths[block[0]] - 1
        else:
            expected = name.split(".")[0].endswith("_head") or any(name.startswith(f"{s}.norm.") for s in depths)
        assert (name in selected) == expected, name
    heads = {n.split(".")[0] for n in selected if block_of(n) is None and ".norm." not in n}
    assert heads == {"mlm_head", "caption_head", "frame_head", "match_head"}


@pytest.mark.parametrize("name", BACKBONES.names())
def test_last_blocks_on_every_backbone(name):
    model = backbone(name)
    depths = transformer_stacks(model)
    assert depths, f"{name} has no transformer stack"
    everything = select_parameters(model, last_blocks(model, max(depths.values()) + 1, heads=()))
    in_blocks = [n for n, _ in model.named_parameters() if block_of(n) is not None]
    assert set(in_blocks) <= set(everything)  # n larger than a stack's depth takes the whole stack
    one = select_parameters(model, last_blocks(model, 1, heads=()))
    assert all(block_of(n) is None or block_of(n)[1] == depths[block_of(n)[0]] - 1 for n in one)


def test_last_blocks_options_and_errors():
    model = univl_two_blocks()
    only_decoder = last_blocks(model, 2, stacks=["decoder"], heads=())
    assert only_decoder == ["decoder.blocks.0.*", "decoder.blocks.1.*", "decoder.norm.*"]
    with pytest.raises(ValueError, match="at least 1"):
        last_blocks(model, 0)
    with pytest.raises(ValueError, match="unknown transformer stack"):
        last_blocks(model, 1, stacks=["encoder"])
    with pytest.raises(ValueError, match="matches no parameter"):
        last_blocks(model, 1, heads=["classifier.*"])
    with pytest.raises(ValueError, match="no transformer stack"):
        last_blocks(torch.nn.Linear(2, 2), 1)


class SameMasks(MetaProblem):
    """Fixed mask seeds, so that the scoped and the full problems see the same masks."""

    def seed_of(self, batch):
        return 11 if batch is self.train_batch else 12


def make_problem(model, scope_names, backend="double_backward") -> MetaProblem:
    torch.manual_seed(1)
    combiner = MetaLossTransformer(model.tasks, d_model=16, mlp_hidden=8, ff_dim=32, num_heads=2)
    return SameMasks(
        model=model,
        combiner=combiner,
        param_names=scope_names,
        train_batch=random_batch(batch_size=4, seed=0),
        meta_batch=random_batch(batch_size=4, seed=1),
        backend=BACKENDS.get(backend),  # each finite-difference backend at its default step
    )


def masked_reference(model, scope_names) -> list[torch.Tensor]:
    """``d_phi L_pri - grad_phi <v masked to S, grad_w L_aux>`` with the full scope and the double backward."""
    full = make_problem(model, [n for n, _ in model.named_parameters()])
    vector, direct = full.primary_gradients()
    masked = [v if n in scope_names else torch.zeros_like(v) for n, v in zip(full.param_names, vector, strict=True)]
    return [d - m for d, m in zip(direct, double_backward(full, masked), strict=True)]


def relative_error(got, expected) -> float:
    difference = sum(float(((g - e) ** 2).sum()) for g, e in zip(got, expected, strict=True))
    return (difference / sum(float((e**2).sum()) for e in expected)) ** 0.5


@pytest.mark.parametrize("backend", BACKENDS.names())
def test_scoped_identity_hypergradient_is_the_full_one_with_v_masked_outside_the_scope(backend):
    model = univl_two_blocks()
    scope_names = select_parameters(model, last_blocks(model, 1))
    with sdpa_kernel(SDPBackend.MATH):
        reference = masked_reference(model, scope_names)
        scoped = build_estimator("identity")(make_problem(model, scope_names, backend))
        unscoped = build_estimator("identity")(make_problem(model, [n for n, _ in model.named_parameters()]))
    # finite differences in float32: O(e^2) central, O(e) one-sided (about 3e-3 at its default step here)
    tolerance = {"finite_difference": 1e-3, "forward_difference": 1e-2}.get(backend, 1e-5)
    assert relative_error(scoped, reference) < tolerance
    # the scope matters: the full hypergradient is a different vector
    assert relative_error(unscoped, reference) > 1e-2


def test_the_learner_differentiates_through_the_scope_only():
    model = univl_two_blocks()
    patterns = last_blocks(model, 1)
    combiner = MetaLossTransformer(model.tasks, d_model=16, mlp_hidden=8, ff_dim=32, num_heads=2)
    learner = AuxiliaryLearner(
        model, combiner, torch.optim.SGD(model.parameters(), lr=1e-3), hypergrad_scope=patterns, backend="jvp"
    )
    assert learner.scope == select_parameters(model, patterns)
    assert all(any(fnmatch.fnmatchcase(n, p) for p in patterns) for n in learner.scope)
    assert "text_encoder.blocks.0.attention.query.weight" not in learner.scope
    for seed in range(3):
        stats = learner.step(random_batch(batch_size=4, seed=seed))
    assert stats.meta is not None and stats.meta.hypergrad_norm > 0
