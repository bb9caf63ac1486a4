"""Per-sample pretext losses shared by the backbones; each returns a ``[B]`` vector of finite losses >= 0.

Only ``log_softmax``, ``gather``, ``softplus`` and ``where`` are used, which support double backward and
forward-mode AD.
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


__all__ = [
    "binary_matching_loss",
    "frame_nce",
    "masked_token_loss",
    "pair_matching_loss",
    "symmetric_info_nce",
    "token_cross_entropy",
]
