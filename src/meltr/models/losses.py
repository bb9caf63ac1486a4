"""Per-sample pretext losses shared by the backbones; each returns a ``[B]`` vector of finite losses >= 0.

Only ``log_softmax``, ``gather``, ``softplus`` and ``where`` are used, which support double backward and
forward-mode AD.

The contrastive losses of VATT-style pre-training ("Scaling Multimodal Pre-Training via Cross-Modality Gradient
Harmonization", Sec. 2) take embeddings rather than logits: :func:`info_nce` (``CMA_va``, NCE between a video and
its audio, the other clips of the batch as negatives) and :func:`mil_nce` (``CMA_vt``: MIL-NCE of Miech et al.,
"End-to-End Learning of Visual Representations from Uncurated Instructional Videos", CVPR 2020, Eq. 1, between a
video and a *bag* ``P_k`` of ``k`` temporally neighbouring captions, any of which may be the one that matches)::

    CMA_vt(i) = -log( sum_{t in P_k(i)} e^{v_i . t / tau} / (sum_{t in P_k(i)} e^{v_i . t / tau}
                                                              + sum_{(v', t') in N(i)} e^{v' . t' / tau}) ).

Both give per-sample losses ``[B]`` with ``reduction="none"``, the shape a per-sample curriculum needs. A sample's
loss depends on the other samples (its negatives); its gradient is taken as such.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from meltr.models.layers import masked_mean


def token_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """``-log softmax(logits)[target]`` elementwise: logits ``[..., V]``, targets ``[...]`` -> ``[...]``."""
    return -logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def masked_token_loss(logits: Tensor, targets: Tensor, selected: Tensor) -> Tensor:
    """Mean cross-entropy over each sample's selected positions (masked LM, masked visual tokens, captions).

    Args:
        logits: ``[B, N, V]``.
        targets: ``[B, N]`` class ids.
        selected: boolean ``[B, N]``, the positions that count.

    Returns:
        ``[B]``; 0 for a sample with no selected position.
    """
    return masked_mean(token_cross_entropy(logits, targets), selected)


def symmetric_info_nce(logits: Tensor, exclude: Tensor | None = None) -> Tensor:
    """Per-sample symmetric InfoNCE of a ``[B, B]`` similarity matrix whose diagonal holds the positive pairs.

    ``loss_i = (-log softmax_j(s_ij)[i] - log softmax_j(s_ji)[i]) / 2``: row ``i``'s text-to-video term and
    column ``i``'s video-to-text term (UniVL's L_Align, All-in-one's VTC).

    Args:
        logits: ``[B, B]``, ``s_ij`` the (scaled) similarity of text ``i`` and video ``j``.
        exclude: boolean ``[B, B]``, off-diagonal pairs left out of both softmaxes (false negatives).

    Returns:
        ``[B]``.
    """
    if exclude is not None:
        logits = logits.masked_fill(exclude, torch.finfo(logits.dtype).min)
    text_to_video = -logits.log_softmax(dim=1).diagonal()
    video_to_text = -logits.log_softmax(dim=0).diagonal()
    return (text_to_video + video_to_text) / 2


def binary_matching_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Elementwise binary cross-entropy with logits: ``softplus(-z)`` for a match, else ``softplus(z)``."""
    return F.softplus(torch.where(labels.bool(), -logits, logits))


def pair_matching_loss(positive_logits: Tensor, negative_logits: Tensor, has_negative: Tensor) -> Tensor:
    """Per-sample video-text matching with one in-batch negative: the mean of the BCE of the positive pair
    and, where the batch offers one, of the negative pair.

    Args:
        positive_logits: ``[B]`` matching logits of the true pairs.
        negative_logits: ``[B]`` matching logits of each sample's negative pair.
        has_negative: boolean ``[B]``, False where the sample has no negative (its term is dropped).

    Returns:
        ``[B]``.
    """
    weight = has_negative.to(positive_logits.dtype)
    negative = torch.where(has_negative, F.softplus(negative_logits), torch.zeros_like(negative_logits))
    return (F.softplus(-positive_logits) + negative) / (1.0 + weight)


def frame_nce(
    predicted: Tensor,
    targets: Tensor,
    selected: Tensor,
    exclude: Tensor | None = None,
    target_mask: Tensor | None = None,
) -> Tensor:
    """UniVL's conditioned masked frame modelling loss: NCE of each masked frame's prediction against every
    frame of the batch, the true frame being the positive.

    ``loss_b = mean_{f masked} -log softmax_{(c, g)}(<p_bf, x_cg>)[(b, f)]``.

    Args:
        predicted: ``[B, F, D]`` predicted frame features.
        targets: ``[B, F, D]`` the true frame features (fixed, not learned).
        selected: boolean ``[B, F]``, the masked frames.
        exclude: boolean ``[B, B]``, pairs of samples whose frames are not negatives of each other (the
            same clip).
        target_mask: boolean ``[B, F]``, the frames that exist (padded feature rows are no negatives).

    Returns:
        ``[B]``.
    """
    batch, frames, _ = predicted.shape
    logits = predicted.flatten(0, 1) @ targets.flatten(0, 1).t()
    if exclude is not None:
        frame_exclude = exclude[:, None, :, None].expand(batch, frames, batch, frames).reshape(logits.shape)
        logits = logits.masked_fill(frame_exclude, torch.finfo(logits.dtype).min)
    if target_mask is not None:
        logits = logits.masked_fill(~target_mask.reshape(1, -1), torch.finfo(logits.dtype).min)
    nce = -logits.log_softmax(-1).diagonal().view(batch, frames)
    return masked_mean(nce, selected)


def _check_contrastive(temperature: float, reduction: str) -> None:
    if not temperature > 0:
        raise ValueError(f"the temperature must be positive, got {temperature}")
    if reduction not in ("none", "mean"):
        raise ValueError(f"reduction must be 'none' (per-sample [B]) or 'mean', got {reduction!r}")


def _reduce(losses: Tensor, reduction: str) -> Tensor:
    return losses if reduction == "none" else losses.mean()


def info_nce(
    video: Tensor,
    audio: Tensor,
    temperature: float = 0.07,
    symmetric: bool = True,
    normalize: bool = True,
    reduction: str = "mean",
) -> Tensor:
    """NCE (InfoNCE) between paired embeddings, the other pairs of the batch as negatives.

    With ``s_ij = v_i . a_j / tau``: ``l_i = -log softmax_j(s_ij)[i]`` (video -> audio); symmetric:
    ``l_i = (-log softmax_j(s_ij)[i] - log softmax_j(s_ji)[i]) / 2``, adding audio -> video.

    Args:
        video: ``[B, D]`` embeddings.
        audio: ``[B, D]`` embeddings, ``audio[i]`` the positive of ``video[i]``.
        temperature: ``tau``.
        symmetric: average both directions.
        normalize: L2-normalise the embeddings first (cosine similarities, as VATT).
        reduction: ``"none"`` for per-sample ``[B]``, ``"mean"`` for a scalar.
    """
    _check_contrastive(temperature, reduction)
    if video.dim() != 2 or video.shape != audio.shape:
        raise ValueError(f"expected two [B, D] embeddings of one shape, got {tuple(video.shape)}, {tuple(audio.shape)}")
    if normalize:
        video, audio = F.normalize(video, dim=-1), F.normalize(audio, dim=-1)
    logits = video @ audio.T / temperature
    losses = symmetric_info_nce(logits) if symmetric else -logits.log_softmax(dim=1).diagonal()
    return _reduce(losses, reduction)


def mil_nce(
    video: Tensor,
    text: Tensor,
    temperature: float = 0.07,
    symmetric: bool = True,
    normalize: bool = True,
    reduction: str = "mean",
) -> Tensor:
    """MIL-NCE between each video and its bag of ``K`` neighbouring captions.

    With ``s_ijk = v_i . t_jk / tau``:
    ``l_i = -logsumexp_k s_iik + logsumexp(positives and negatives)``, the negatives being every other clip's
    captions ``{s_ijk : j != i}`` and, if ``symmetric``, every other clip's video against clip ``i``'s captions
    ``{s_jik : j != i}`` (both kinds, as the official code's ``cat(x, x^T)``; unlike that code, the positives are
    counted once in the denominator, as in Eq. 1 of Miech et al.). ``K = 1`` is NCE.

    Args:
        video: ``[B, D]`` embeddings.
        text: ``[B, K, D]`` caption embeddings, ``text[i]`` the bag of ``video[i]`` (``[B, D]``: ``K = 1``).
        temperature: ``tau``.
        symmetric: also contrast the other videos against each clip's captions.
        normalize: L2-normalise the embeddings first.
        reduction: ``"none"`` for per-sample ``[B]``, ``"mean"`` for a scalar.
    """
    _check_contrastive(temperature, reduction)
    if text.dim() == 2:
        text = text.unsqueeze(1)
    if video.dim() != 2 or text.dim() != 3 or text.shape[0] != video.shape[0] or text.shape[2] != video.shape[1]:
        raise ValueError(
            f"expected video [B, D] and text [B, K, D] (or [B, D]), got {tuple(video.shape)}, {tuple(text.shape)}"
        )
    if normalize:
        video, text = F.normalize(video, dim=-1), F.normalize(text, dim=-1)
    batch, bag, _ = text.shape
    scores = torch.einsum("id,jkd->ijk", video, text) / temperature  # [B, B, K]
    own = torch.eye(batch, dtype=torch.bool, device=video.device)
    positives = scores[own].logsumexp(-1)  # [B]: s_iik over k
    candidates = [scores.reshape(batch, batch * bag)]  # video i against every caption (its own bag included)
    if symmetric:
        # Other videos against clip i's captions; j == i is already among the candidates.
        others = scores.transpose(0, 1).masked_fill(own.unsqueeze(-1), torch.finfo(scores.dtype).min)
        candidates.append(others.reshape(batch, batch * bag))
    losses = torch.cat(candidates, dim=1).logsumexp(-1) - positives
    return _reduce(losses, reduction)


__all__ = [
    "binary_matching_loss",
    "frame_nce",
    "info_nce",
    "masked_token_loss",
    "mil_nce",
    "pair_matching_loss",
    "symmetric_info_nce",
    "token_cross_entropy",
]
