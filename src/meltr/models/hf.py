"""Hugging Face ``transformers`` towers behind the backbone contract (extra ``meltr[hf]``).

:class:`HFVideoText` wraps a text tower and a video tower into a module whose ``forward(batch)`` returns per-sample
pretext losses ``{task: [B]}``, so that every combiner, estimator and loop of meltr works on real pre-trained
models. Three ways to give the towers (each a local ``save_pretrained`` directory; nothing is ever downloaded):

- ``xclip=DIR``: an X-CLIP model (Ni et al., "Expanding Language-Image Pretrained Models for General Video
  Recognition", ECCV 2022): its own video encoder (per-frame CLIP + multi-frame integration transformer) and its
  video-conditioned text prompts; the contrastive logits are X-CLIP's own ``logits_per_text``;
- ``clip=DIR``: a CLIP model applied frame by frame with mean temporal pooling, as CLIP4Clip's "meanP" (Luo et al.,
  "CLIP4Clip", 2021), using CLIP's own projections and logit scale;
- ``text=DIR`` and ``video=DIR``: a BERT-family text encoder (BERT, MiniLM, RoBERTa, ...; or a CLIP text model) and a
  video tower, either a CLIP vision model per frame with mean pooling or VideoMAE (Tong et al., NeurIPS 2022) over
  the clip; fresh linear projections and a learned temperature join them.

Losses (``tasks``; the primary task is ``vtc_t2v``), with ``s_ij`` the scaled similarity of text ``i`` and video
``j``:

- ``vtc_t2v`` / ``vtc_v2t``: InfoNCE both ways, ``-log softmax_j(s_ij)[i]`` and ``-log softmax_i(s_ij)[j]``; other
  captions of the same clip (``clip_id``) are left out of the softmax;
- ``vtm``: video-text matching by a small fusion transformer over ``[text states; video tokens]``, the true pair
  against one in-batch hard negative video per text, drawn with probability ``softmax_j(s_ij)`` (ALBEF's hard
  negatives; Li et al., NeurIPS 2021);
- ``mlm`` (bidirectional text towers only): BERT's masked language modelling over the fused stream (the masked
  text's states attend to the video tokens) or the text stream alone (``mlm_stream``);
- ``caption`` (``caption=True``): a transformer decoder head that writes the caption from the video tokens
  (teacher forcing, per-sample mean token cross-entropy).

Attention runs in the ``eager`` implementation, the one with double backward and forward-mode AD in torch, so
all three hypergradient backends work through these towers.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meltr.config import check_flag, check_positive, check_probability, help_field
from meltr.models.layers import Transformer, causal_mask, masked_mean
from meltr.models.losses import masked_token_loss, pair_matching_loss
from meltr.models.masking import (
    CLS_ID,
    PAD_ID,
    SEP_ID,
    mask_tokens,
    other_samples_of_same_clip,
    sample_negatives,
    special_tokens,
)

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
OPTIONS_FILE = "meltr_hf.json"
"""Options of :class:`HFConfig` stored beside the tower directories of a backbone directory."""


@dataclasses.dataclass
class HFConfig:
    """The heads and losses around the towers (the towers' own sizes are in their ``config.json``)."""

    dim: int = help_field("Width of the fusion transformer, the projections and the caption decoder.", 256)
    fusion_depth: int = help_field("Blocks of the fusion transformer (VTM, fused MLM).", 1)
    num_heads: int = help_field("Attention heads of the fusion transformer and the decoder.", 4)
    ff_dim: int = help_field("MLP width of the fusion transformer and the decoder.", 512)
    temperature: float = help_field(
        "Initial temperature of the contrastive logits when the towers have no logit scale of their own.", 0.05
    )
    mlm: bool = help_field("Add the masked language modelling task (needs a bidirectional text tower).", True)
    mlm_stream: str = help_field("'fused' (masked text attends to the video) or 'text' (text tower alone).", "fused")
    mask_prob: float = help_field("Share of the text tokens masked for MLM.", 0.15)
    caption: bool = help_field("Add a caption decoder head and its task 'caption'.", False)
    decoder_depth: int = help_field("Blocks of the caption decoder.", 1)
    hard_negatives: bool = help_field("Draw VTM negatives by contrastive similarity (else uniformly).", True)
    special_tokens: dict[str, int] | None = help_field(
        "Special ids {pad, cls, sep, mask, unk, first_regular} for MLM (default: the tokenizer saved beside the "
        "text tower, else the world's).",
        None,
    )

    def __post_init__(self) -> None:
        check_positive(self, "dim", "fusion_depth", "num_heads", "ff_dim", "decoder_depth")
        check_probability(self, "mask_prob")
        check_flag(self, "mlm", "caption", "hard_negatives")
        if self.mlm_stream not in ("fused", "text"):
            raise ValueError(f"HFConfig.mlm_stream must be 'fused' or 'text', got {self.mlm_stream!r}")
        if not self.temperature > 0:
            raise ValueError(f"HFConfig.temperature must be positive, got {self.temperature!r}")
        if self.dim % self.num_heads:
            raise ValueError(f"HFConfig.dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        self.special_tokens = special_tokens(self.special_tokens)


def _eager(model: nn.Module) -> nn.Module:
    """Switch a transformers model to the eager attention implementation (double backward, forward-mode AD)."""
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    elif hasattr(model, "config"):
        model.config._attn_implementation = "eager"
    return model


def load_pretrained(directory: str | Path) -> nn.Module:
    """A model from a local ``save_pretrained`` directory, with eager attention; never downloads.

    Raises:
        FileNotFoundError: ``directory`` holds no ``config.json``.
    """
    from transformers import AutoModel

    path = Path(directory)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path}: not a save_pretrained directory (no config.json); meltr.models.hf loads local directories only "
            "and never downloads (save a model with model.save_pretrained(DIR) first)"
        )
    return AutoModel.from_pretrained(path, local_files_only=True, attn_implementation="eager")


def tokenizer_ids(directory: str | Path) -> dict[str, Any]:
    """``{"special_tokens": ...}`` of the tokenizer saved in ``directory`` ({} if there is none)."""
    path = Path(directory)
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")):
        return {}
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    named = {
        "pad": tokenizer.pad_token_id,
        "cls": tokenizer.cls_token_id,
        "sep": tokenizer.sep_token_id,
        "mask": tokenizer.mask_token_id,
        "unk": tokenizer.unk_token_id,
    }
    named = {k: int(v) for k, v in named.items() if v is not None}
    # Random MLM replacements are drawn after the last bracketed entry ([PAD], [unused*], [CLS], ...), as BERT's.
    bracketed = [i for token, i in tokenizer.get_vocab().items() if token.startswith("[") and token.endswith("]")]
    named["first_regular"] = max([*bracketed, *named.values()]) + 1
    return {"special_tokens": named}


def _kind(model: nn.Module) -> str:
    return type(model).__name__


class HFVideoText(nn.Module):
    """A video-language backbone made of transformers towers, exposing its pretext losses (module docstring).

    Args:
        text: a text tower (BERT-family encoder, ``CLIPTextModel``), or ``None`` with ``clip`` / ``xclip``.
        video: a video tower (``CLIPVisionModel`` per frame, ``VideoMAEModel``), or ``None``.
        clip: a ``CLIPModel`` (both towers, applied per frame: CLIP4Clip).
        xclip: an ``XCLIPModel`` (both towers).
        config: heads and losses.
    """

    retrieval_loss = "vtc_t2v"  # the primary loss of the retrieval task
    matching_loss = "vtm"  # the loss the fusion transformer's match_score is trained by

    def __init__(
        self,
        text: nn.Module | None = None,
        video: nn.Module | None = None,
        *,
        clip: nn.Module | None = None,
        xclip: nn.Module | None = None,
        config: HFConfig | None = None,
    ) -> None:
        super().__init__()
        c = self.config = config or HFConfig()
        given = [name for name, m in (("towers", text or video), ("clip", clip), ("xclip", xclip)) if m is not None]
        if len(given) != 1 or (given == ["towers"] and (text is None or video is None)):
            raise ValueError("give exactly one of: text= and video=, clip=, or xclip=")
        self.source = given[0]
        if self.source in ("clip", "xclip"):  # one model holds both towers
            joint = _eager(clip if clip is not None else xclip)
            setattr(self, self.source, joint)
            text_config, vision_config = joint.config.text_config, joint.config.vision_config
            text_width, token_width, self.video_kind = text_config.hidden_size, vision_config.hidden_size, self.source
            self.vocab_size, self.image_size = text_config.vocab_size, vision_config.image_size
            self.bidirectional = False  # CLIP-style text encoders are causal
        else:
            if getattr(text, "pooler", None) is not None:
                # BERT's pooler feeds no loss here; an unused parameter would stall DDP's reducer.
                text.pooler = None
            self.text_tower, self.video_tower = _eager(text), _eager(video)
            self.vocab_size = text.config.vocab_size
            self.bidirectional = "CLIP" not in _kind(text) and not getattr(text.config, "is_decoder", False)
            text_width, token_width = text.config.hidden_size, video.config.hidden_size
            if _kind(video) == "VideoMAEModel":
                self.video_kind = "videomae"
            elif _kind(video) == "CLIPVisionModel":
                self.video_kind = "clip"
            else:
                raise ValueError(
                    f"video tower {_kind(video)}: meltr.models.hf supports CLIPVisionModel and VideoMAEModel"
                )
            self.image_size = video.config.image_size
            self.text_projection = nn.Linear(text_width, c.dim)
            self.video_projection = nn.Linear(token_width, c.dim)
            self.logit_scale = nn.Parameter(torch.tensor(1.0 / c.temperature).log())
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if self.video_kind == "videomae" else (CLIP_MEAN, CLIP_STD)
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 1, 3, 1, 1), persistent=False)
        if c.mlm and not self.bidirectional:
            raise ValueError(
                f"HFConfig.mlm needs a bidirectional text tower; the {self.source} text tower is causal: pass mlm=False"
            )
        self.tasks: tuple[str, ...] = ("vtc_t2v", "vtc_v2t", "vtm") + (("mlm",) if c.mlm else ())
        self.tasks += ("caption",) if c.caption else ()
        self.primary_task = "vtc_t2v"
        self.fusion_text = nn.Linear(text_width, c.dim)
        self.fusion_video = nn.Linear(token_width, c.dim)
        self.modality = nn.Embedding(2, c.dim)
        self.fusion = Transformer(c.dim, c.fusion_depth, c.num_heads, c.ff_dim)
        self.match_head = nn.Linear(c.dim, 1)
        if c.mlm:
            self.mlm_head = nn.Linear(c.dim if c.mlm_stream == "fused" else text_width, self.vocab_size)
        if c.caption:
            self.caption_embedding = nn.Embedding(self.vocab_size, c.dim)
            self.caption_position = nn.Parameter(torch.zeros(512, c.dim))
            self.decoder = Transformer(c.dim, c.decoder_depth, c.num_heads, c.ff_dim, cross_attention=True)
            self.caption_head = nn.Linear(c.dim, self.vocab_size)
        self.special = c.special_tokens
        self.train()  # from_pretrained returns towers in eval mode; keep one mode for the whole backbone

    # -- inputs ---------------------------------------------------------------------------------------------------
    def _pixels(self, video: Tensor) -> Tensor:
        """``[B, F, 3, H, W]`` in [0, 1] -> the tower's size (bilinear) and normalisation."""
        if video.dim() != 5 or video.shape[2] != 3:
            raise ValueError(f"batch['video'] must be [B, F, 3, H, W] RGB in [0, 1], got {list(video.shape)}")
        frames = video.shape[1]
        if video.shape[-1] != self.image_size or video.shape[-2] != self.image_size:
            flat = F.interpolate(video.flatten(0, 1), size=(self.image_size,) * 2, mode="bilinear", align_corners=False)
            video = flat.view(video.shape[0], frames, 3, self.image_size, self.image_size)
        if self.video_kind == "videomae":
            wanted = self.video_tower.config.num_frames
            if frames != wanted:  # sample the clip's frames evenly to the tower's clip length
                video = video[:, torch.linspace(0, frames - 1, wanted).round().long()]
        return (video - self.pixel_mean) / self.pixel_std

    def _text_inputs(self, batch: Mapping[str, Tensor], text_key: str) -> tuple[Tensor, Tensor]:
        for key in ("video", text_key, f"{text_key}_mask"):
            if key not in batch:
                raise KeyError(f"HFVideoText needs batch keys video, {text_key}, {text_key}_mask; missing {key!r}")
        ids, mask = batch[text_key], batch[f"{text_key}_mask"].bool()
        if ids.numel() and int(ids.max()) >= self.vocab_size:
            raise ValueError(
                f"batch[{text_key!r}] holds token id {int(ids.max())} >= the text tower's vocab_size="
                f"{self.vocab_size}; tokenize with the tower's tokenizer, or build the tower with the world's vocab"
            )
        return ids, mask

    # -- towers ---------------------------------------------------------------------------------------------------
    def _text_states(self, ids: Tensor, mask: Tensor) -> Tensor:
        if self.source == "xclip":
            return self.xclip.text_model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        if self.source == "clip":
            return self.clip.text_model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        return self.text_tower(input_ids=ids, attention_mask=mask.long()).last_hidden_state

    def _video_tokens(self, pixels: Tensor) -> Tensor:
        """Per-frame (CLIP, X-CLIP) or per-tube (VideoMAE) token states ``[B, N, width]``."""
        batch, frames = pixels.shape[:2]
        if self.video_kind == "videomae":
            return self.video_tower(pixel_values=pixels).last_hidden_state
        vision = {"xclip": lambda: self.xclip.vision_model, "clip": lambda: self.clip.vision_model}.get(
            self.source, lambda: self.video_tower
        )()
        return vision(pixel_values=pixels.flatten(0, 1)).pooler_output.view(batch, frames, -1)

    def _text_vector(self, states: Tensor, mask: Tensor, ids: Tensor) -> Tensor:
        if self.source in ("clip", "xclip"):
            model = self.clip if self.source == "clip" else self.xclip
            eos = self._eos_positions(ids, mask)  # CLIP's last_hidden_state is already final-normed
            return F.normalize(model.text_projection(states[torch.arange(ids.shape[0]), eos]), dim=-1)
        return F.normalize(self.text_projection(masked_mean(states, mask)), dim=-1)

    def _eos_positions(self, ids: Tensor, mask: Tensor) -> Tensor:
        """CLIP pools the text at its end-of-text token: the last real position of each row."""
        return mask.long().sum(-1).clamp(min=1) - 1

    def _video_vector(self, tokens: Tensor) -> Tensor:
        if self.source == "xclip":
            return F.normalize(self.xclip.mit(self.xclip.visual_projection(tokens)).pooler_output, dim=-1)
        if self.source == "clip":
            return F.normalize(self.clip.visual_projection(tokens).mean(1), dim=-1)
        return F.normalize(self.video_projection(tokens.mean(1)), dim=-1)

    def _logits(self, ids: Tensor, mask: Tensor, pixels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(s [B_text, B_video], text states, video tokens)``."""
        if self.source == "xclip":
            out = self.xclip(input_ids=ids, attention_mask=mask.long(), pixel_values=pixels)
            tokens = out.vision_model_output.pooler_output.view(pixels.shape[0], pixels.shape[1], -1)
            return out.logits_per_text, out.text_model_output.last_hidden_state, tokens
        states, tokens = self._text_states(ids, mask), self._video_tokens(pixels)
        scale = (self.clip.logit_scale if self.source == "clip" else self.logit_scale).exp()
        similarity = self._text_vector(states, mask, ids) @ self._video_vector(tokens).t()
        return scale * similarity, states, tokens

    def _fuse(self, text_states: Tensor, text_mask: Tensor, video_tokens: Tensor) -> Tensor:
        """The fusion transformer over ``[text; video]``; returns its states ``[B, L + N, dim]``."""
        text = self.fusion_text(text_states) + self.modality.weight[0]
        video = self.fusion_video(video_tokens) + self.modality.weight[1]
        video_mask = torch.ones(video.shape[:2], dtype=torch.bool, device=video.device)
        return self.fusion(torch.cat([text, video], 1), torch.cat([text_mask, video_mask], 1))

    # -- the contract ---------------------------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The pretext losses ``{task: [B]}`` (see the module docstring); reads ``video``, ``text``,
        ``text_mask`` and, if present, ``clip_id``."""
        c = self.config
        ids, mask = self._text_inputs(batch, "text")
        pixels = self._pixels(batch["video"])
        size = ids.shape[0]
        clip_id = batch.get("clip_id")
        logits, text_states, video_tokens = self._logits(ids, mask, pixels)
        exclude = other_samples_of_same_clip(clip_id, size, ids.device)
        if exclude is not None:
            logits = logits.masked_fill(exclude, torch.finfo(logits.dtype).min)
        losses = {
            "vtc_t2v": -logits.log_softmax(dim=1).diagonal(),
            "vtc_v2t": -logits.log_softmax(dim=0).diagonal(),
        }
        partner, has_partner = sample_negatives(size, clip_id, None, ids.device, logits if c.hard_negatives else None)
        fused = self._fuse(
            torch.cat([text_states, text_states]),
            torch.cat([mask, mask]),
            torch.cat([video_tokens, video_tokens[partner]]),
        )
        match = self.match_head(fused[:, 0]).squeeze(-1)
        losses["vtm"] = pair_matching_loss(match[:size], match[size:], has_partner)
        if c.mlm:
            masked, selected = mask_tokens(ids, self.vocab_size, c.mask_prob, mask, special=self.special)
            masked_states = self._text_states(masked, mask)
            if c.mlm_stream == "fused":
                masked_states = self._fuse(masked_states, mask, video_tokens)[:, : ids.shape[1]]
            losses["mlm"] = masked_token_loss(self.mlm_head(masked_states), ids, selected)
        if c.caption:
            losses["caption"] = masked_token_loss(
                self._caption_logits(video_tokens, ids, mask), ids[:, 1:], mask[:, 1:]
            )
        return losses

    def _caption_logits(self, video_tokens: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
        """Teacher forcing: logits ``[B, L - 1, V]`` of tokens ``1..L-1`` given ``0..L-2`` and the video."""
        length = ids.shape[1] - 1
        inputs = self.caption_embedding(ids[:, :-1]) + self.caption_position[:length]
        memory = self.fusion_video(video_tokens)
        states = self.decoder(inputs, causal_mask(mask[:, :-1]), memory, None)
        return self.caption_head(states)

    # -- representations for downstream heads -------------------------------------------------------------------
    def encode_text(self, batch: Mapping[str, Tensor], text_key: str = "text") -> Tensor:
        """``[B, d]`` unit-norm text embeddings (for X-CLIP without its video-conditioned prompts)."""
        ids, mask = self._text_inputs(batch, text_key)
        return self._text_vector(self._text_states(ids, mask), mask, ids)

    def encode_video(self, batch: Mapping[str, Tensor]) -> Tensor:
        """``[B, d]`` unit-norm video embeddings."""
        return self._video_vector(self._video_tokens(self._pixels(batch["video"])))

    def fused(self, batch: Mapping[str, Tensor], text_key: str = "text") -> Tensor:
        """``[B, dim]`` the fusion transformer's first text state for each pair."""
        ids, mask = self._text_inputs(batch, text_key)
        tokens = self._video_tokens(self._pixels(batch["video"]))
        return self._fuse(self._text_states(ids, mask), mask, tokens)[:, 0]

    def match_score(self, batch: Mapping[str, Tensor], text_key: str = "text") -> Tensor:
        """``[B]`` matching logit of each pair."""
        return self.match_head(self.fused(batch, text_key)).squeeze(-1)


def build_hf_backbone(
    directory: str | Path | None = None,
    *,
    text: str | Path | None = None,
    video: str | Path | None = None,
    clip: str | Path | None = None,
    xclip: str | Path | None = None,
    **options: Any,
) -> HFVideoText:
    """An :class:`HFVideoText` from local ``save_pretrained`` directories.

    Args:
        directory: a backbone directory holding ``text/`` and ``video/``, or ``clip/``, or ``xclip/`` (tower
            directories) and optionally ``meltr_hf.json`` (options of :class:`HFConfig`), as
            :func:`save_hf_backbone` writes it; or ``None`` with the tower directories below.
        text, video, clip, xclip: tower directories (see :class:`HFVideoText`).
        **options: fields of :class:`HFConfig` (override the directory's ``meltr_hf.json``).

    Raises:
        FileNotFoundError: a directory is missing or holds no ``config.json``.
        TypeError: an option names no field of :class:`HFConfig`.
    """
    towers, config = load_towers(directory, text=text, video=video, clip=clip, xclip=xclip, **options)
    return HFVideoText(**towers, config=config)


def load_towers(
    directory: str | Path | None = None,
    *,
    text: str | Path | None = None,
    video: str | Path | None = None,
    clip: str | Path | None = None,
    xclip: str | Path | None = None,
    **options: Any,
) -> tuple[dict[str, nn.Module], HFConfig]:
    """The towers of :func:`build_hf_backbone` (keyed as :class:`HFVideoText` takes them) and its
    :class:`HFConfig`, without the heads: a caller builds those from its own random stream."""
    towers = {"text": text, "video": video, "clip": clip, "xclip": xclip}
    if directory is not None:
        root = Path(directory)
        if not root.is_dir():
            raise FileNotFoundError(
                f"{root}: no such backbone directory (it should hold text/ + video/, clip/ or xclip/)"
            )
        saved = json.loads((root / OPTIONS_FILE).read_text()) if (root / OPTIONS_FILE).is_file() else {}
        options = {**saved, **options}
        towers = {name: root / name for name in towers if (root / name).is_dir()}
    fields = {f.name for f in dataclasses.fields(HFConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise TypeError(f"HFConfig has no field(s) {unknown}; the fields are: {', '.join(sorted(fields))}")
    text_dir = towers.get("text") or towers.get("clip") or towers.get("xclip")
    if text_dir is not None:
        for key, value in tokenizer_ids(text_dir).items():
            options.setdefault(key, value)
    config = HFConfig(**options)
    return {name: load_pretrained(path) for name, path in towers.items() if path is not None}, config


def save_hf_backbone(model: HFVideoText, directory: str | Path) -> Path:
    """Write the towers (``save_pretrained``) and the options of ``model`` to ``directory``; the heads are the
    model's other parameters, saved with its ``state_dict``. Returns the directory."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    if model.source == "xclip":
        model.xclip.save_pretrained(root / "xclip")
    elif model.source == "clip":
        model.clip.save_pretrained(root / "clip")
    else:
        model.text_tower.save_pretrained(root / "text")
        model.video_tower.save_pretrained(root / "video")
    options = dataclasses.asdict(model.config)
    (root / OPTIONS_FILE).write_text(json.dumps(options, indent=2) + "\n")
    return root


def tiny_random_towers(
    kind: Literal["bert+clip", "bert+videomae", "clip", "xclip"],
    vocab_size: int,
    image_size: int = 32,
    frames: int = 8,
    width: int = 32,
    seed: int = 0,
) -> dict[str, nn.Module]:
    """Tiny randomly initialised transformers towers (built offline from configs), keyed as :class:`HFVideoText`
    takes them. For tests and the world's tiny recipe; ``width`` is every tower's hidden size."""
    from transformers import (
        BertConfig,
        BertModel,
        CLIPConfig,
        CLIPModel,
        CLIPVisionConfig,
        CLIPVisionModel,
        VideoMAEConfig,
        VideoMAEModel,
        XCLIPConfig,
        XCLIPModel,
    )

    torch.manual_seed(seed)
    small = {"hidden_size": width, "intermediate_size": 2 * width, "num_hidden_layers": 2, "num_attention_heads": 2}
    patch = max(image_size // 4, 1)
    text_config = {"vocab_size": vocab_size, "max_position_embeddings": 128, **small}
    clip_text = {**text_config, "bos_token_id": CLS_ID, "eos_token_id": SEP_ID, "pad_token_id": PAD_ID}
    vision_config = {"image_size": image_size, "patch_size": patch, **small}
    if kind == "xclip":
        # X-CLIP's prompt generator and MIT read the projected frame features: projection_dim == mit_hidden_size.
        vision = {**vision_config, "num_frames": frames, "mit_hidden_size": width, "mit_intermediate_size": 2 * width}
        vision.update(mit_num_hidden_layers=1, mit_num_attention_heads=2)
        config = XCLIPConfig(
            text_config=clip_text,
            vision_config=vision,
            projection_dim=width,
            prompt_layers=1,
            prompt_attention_heads=2,
        )
        return {"xclip": XCLIPModel(config)}
    if kind == "clip":
        return {"clip": CLIPModel(CLIPConfig(text_config=clip_text, vision_config=vision_config, projection_dim=width))}
    text = BertModel(BertConfig(**text_config, pad_token_id=PAD_ID), add_pooling_layer=False)
    if kind == "bert+clip":
        return {"text": text, "video": CLIPVisionModel(CLIPVisionConfig(**vision_config))}
    if kind == "bert+videomae":
        video = VideoMAEModel(VideoMAEConfig(num_frames=frames, tubelet_size=2, **vision_config))
        return {"text": text, "video": video}
    raise ValueError(f"unknown tiny tower kind {kind!r}; choose bert+clip, bert+videomae, clip or xclip")


def tiny_random_backbone(
    vocab_size: int, kind: str = "bert+clip", image_size: int = 32, frames: int = 8, seed: int = 0, **options: Any
) -> HFVideoText:
    """An :class:`HFVideoText` over :func:`tiny_random_towers` with small heads (``dim=32``), for the world's tiny
    recipe, the examples and tests; ``options`` are fields of :class:`HFConfig`."""
    towers = tiny_random_towers(kind, vocab_size, image_size, frames, seed=seed)
    return HFVideoText(**towers, config=HFConfig(**tiny_heads(kind, options)))


TINY_KINDS: tuple[str, ...] = ("bert+clip", "bert+videomae", "clip", "xclip")
"""The tower pairs :func:`tiny_random_towers` builds."""


def tiny_heads(kind: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The :class:`HFConfig` fields of tiny random towers: small heads (``dim=32``), MLM when the text tower is
    bidirectional (BERT), updated with ``options``."""
    return {"dim": 32, "ff_dim": 64, "num_heads": 2, "mlm": kind.startswith("bert"), **dict(options or {})}


__all__ = [
    "OPTIONS_FILE",
    "TINY_KINDS",
    "HFConfig",
    "HFVideoText",
    "build_hf_backbone",
    "load_pretrained",
    "load_towers",
    "save_hf_backbone",
    "tiny_heads",
    "tiny_random_backbone",
    "tiny_random_towers",
    "tokenizer_ids",
]
