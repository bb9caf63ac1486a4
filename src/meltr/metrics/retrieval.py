"""Text-to-video (and video-to-text) retrieval: R@K, median rank and mean rank from a similarity matrix.

These are the numbers of Tables 1 and 2 of MELTR (R@1, R@5, R@10 in percent; MedR), computed the way the
UniVL / CLIP4Clip evaluation code computes them when no two scores are equal. That code ranks by
``np.sort(-sim)`` and looks the ground-truth score up with ``np.where(sorted == gt)``; when a negative ties
with the positive, a query yields several "ranks" and inflates the denominator, so its numbers depend on the
ties. Here the tie rule is explicit:

- ``ties="pessimistic"`` (default, the conservative reading): every negative whose score equals the positive's
  is ranked before it, ``rank = 1 + #{neg: s_neg > s_pos} + #{neg: s_neg == s_pos}``. A model that scores
  every pair alike gets rank N for every query, never a lucky R@1.
- ``ties="optimistic"``: ties are resolved in favour of the positive, ``rank = 1 + #{neg: s_neg > s_pos}``.

The two agree exactly when no query has a tie; their gap is an honest error bar when it has.
:attr:`RankScores.num_tied_queries` counts the queries where the rule mattered.

Ranks are 1-based. When a query has several positives (video-to-text with several captions per video, as in
the MSRVTT-9k protocol), its rank is the rank of its best-scored positive, and the other positives are not
counted against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from meltr.metrics._inputs import ArrayLike, check_finite, percent, to_numpy

TIE_RULES = ("pessimistic", "optimistic")

# Rows ranked per block: bounds the memory of the [rows, candidates] comparison masks on large test sets.
_ROWS_PER_BLOCK = 1024


@dataclass(frozen=True)
class RankScores:
    """Retrieval scores of one direction, as the papers print them.

    Attributes:
        r1: R@1, the percentage of queries whose positive is ranked first.
        r5: R@5 in percent.
        r10: R@10 in percent.
        median_rank: MdR (MedR), the median of the 1-based ranks (a half-integer when the middle two differ).
        mean_rank: MnR, the mean of the 1-based ranks.
        num_queries: how many queries were ranked.
        num_tied_queries: how many queries had a negative scored exactly like their (best) positive, i.e.
            where the tie rule changed the rank.
        ranks: the 1-based rank of every query, in query order.
    """

    r1: float
    r5: float
    r10: float
    median_rank: float
    mean_rank: float
    num_queries: int
    num_tied_queries: int
    ranks: np.ndarray = field(repr=False, compare=False)

    def recall_at(self, k: int) -> float:
        """R@k in percent for any ``k >= 1``."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        return percent(np.mean(self.ranks <= k))

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """``{"R@1": ..., "R@5": ..., "R@10": ..., "MdR": ..., "MnR": ...}``, keys prefixed by ``prefix``."""
        values = {
            "R@1": self.r1,
            "R@5": self.r5,
            "R@10": self.r10,
            "MdR": self.median_rank,
            "MnR": self.mean_rank,
        }
        return {prefix + name: value for name, value in values.items()}


@dataclass(frozen=True)
class RetrievalScores:
    """Both directions of a retrieval evaluation.

    Attributes:
        t2v: text-to-video retrieval (each caption queries all videos), the direction of Tables 1 and 2 of
            MELTR.
        v2t: video-to-text retrieval (each video that has a caption queries all captions).
        ties: the tie rule used.
    """

    t2v: RankScores
    v2t: RankScores
    ties: str

    def as_dict(self) -> dict[str, float]:
        """Flat ``{"t2v/R@1": ..., "v2t/MdR": ...}`` for loggers."""
        return {**self.t2v.as_dict("t2v/"), **self.v2t.as_dict("v2t/")}


def rank_queries(scores: ArrayLike, positives: ArrayLike, *, ties: str = "pessimistic") -> np.ndarray:
    """The 1-based rank of each query's best positive among all its candidates.

    With ``s* = max_{j in P} s_j`` the best positive score of a query and ``N`` its negatives,

    - pessimistic: ``rank = 1 + #{j in N: s_j > s*} + #{j in N: s_j == s*}``;
    - optimistic:  ``rank = 1 + #{j in N: s_j > s*}``.

    Args:
        scores: ``[queries, candidates]`` similarities, higher is better. ``-inf`` is allowed (a masked pair);
            NaN is not.
        positives: boolean mask of the same shape, ``True`` where the candidate is a correct answer; every
            query needs at least one.
        ties: ``"pessimistic"`` or ``"optimistic"`` (see the module docstring).

    Returns:
        ``[queries]`` int64 ranks.

    Raises:
        ValueError: bad shapes, NaN scores, a query without a positive, or an unknown tie rule.
    """
    _check_tie_rule(ties)
    score_matrix = to_numpy(scores)
    mask = to_numpy(positives)
    if score_matrix.ndim != 2 or 0 in score_matrix.shape:
        raise ValueError(f"scores must be a non-empty [queries, candidates] matrix, got shape {score_matrix.shape}")
    if mask.shape != score_matrix.shape:
        raise ValueError(f"positives must have the shape of scores {score_matrix.shape}, got {mask.shape}")
    if mask.dtype != np.bool_:
        raise ValueError(f"positives must be a boolean mask, got dtype {mask.dtype}")
    check_finite(score_matrix.astype(np.float64, copy=False), "scores", allow_inf=True)
    empty = ~mask.any(axis=1)
    if empty.any():
        raise ValueError(f"positives: query {int(np.argmax(empty))} has no positive candidate")
    return _ranks_and_ties(score_matrix, mask, ties)[0]


def summarize_ranks(ranks: ArrayLike, num_tied_queries: int = 0) -> RankScores:
    """R@1/5/10 (percent), median and mean rank from 1-based ranks."""
    rank_array = np.asarray(to_numpy(ranks))
    if rank_array.ndim != 1 or rank_array.size == 0:
        raise ValueError(f"ranks must be a non-empty vector, got shape {rank_array.shape}")
    if not np.issubdtype(rank_array.dtype, np.integer) or rank_array.min() < 1:
        raise ValueError("ranks must be 1-based integers")
    return RankScores(
        r1=percent(np.mean(rank_array <= 1)),
        r5=percent(np.mean(rank_array <= 5)),
        r10=percent(np.mean(rank_array <= 10)),
        median_rank=float(np.median(rank_array)),
        mean_rank=float(np.mean(rank_array)),
        num_queries=int(rank_array.size),
        num_tied_queries=int(num_tied_queries),
        ranks=rank_array,
    )


def retrieval_metrics(
    sim: ArrayLike, video_of_text: Sequence[int] | ArrayLike | None = None, *, ties: str = "pessimistic"
) -> RetrievalScores:
    """Retrieval scores of a text-video similarity matrix in both directions (Tables 1 and 2 of MELTR).

    Args:
        sim: ``[texts, videos]`` similarities, ``sim[i, j]`` the score of caption ``i`` against video ``j``; a
            numpy array or a tensor (any float dtype, any device).
        video_of_text: ``video_of_text[i]`` is the column of the video caption ``i`` describes. ``None`` means
            the ground truth is the diagonal (``sim`` must then be square), the 1k-A MSRVTT and YouCook2
            setting.
        ties: ``"pessimistic"`` (default) or ``"optimistic"``; see the module docstring.

    Returns:
        :class:`RetrievalScores` with ``t2v`` (every caption is a query over all videos) and ``v2t`` (every
        video with at least one caption is a query over all captions; its rank is that of its best-scored
        caption).

    Raises:
        ValueError: ``sim`` is empty, not 2-D, not square without ``video_of_text``, or holds NaN;
            ``video_of_text`` has the wrong length or indices out of range; unknown ``ties``.
    """
    _check_tie_rule(ties)
    matrix = to_numpy(sim)
    if matrix.ndim != 2 or 0 in matrix.shape:
        raise ValueError(f"sim must be a non-empty [texts, videos] matrix, got shape {matrix.shape}")
    if not np.issubdtype(matrix.dtype, np.number):
        raise ValueError(f"sim must hold numbers, got dtype {matrix.dtype}")
    check_finite(matrix.astype(np.float64, copy=False), "sim", allow_inf=True)
    num_texts, num_videos = matrix.shape
    videos = _video_index(video_of_text, num_texts, num_videos)

    text_positives = np.zeros((num_texts, num_videos), dtype=bool)
    text_positives[np.arange(num_texts), videos] = True
    t2v_ranks, t2v_tied = _ranks_and_ties(matrix, text_positives, ties)

    # A video without a caption cannot be retrieved correctly: a t2v candidate, but no v2t query.
    queried_videos = np.unique(videos)
    video_positives = text_positives.T[queried_videos]
    v2t_ranks, v2t_tied = _ranks_and_ties(matrix.T[queried_videos], video_positives, ties)

    return RetrievalScores(
        t2v=summarize_ranks(t2v_ranks, int(t2v_tied.sum())),
        v2t=summarize_ranks(v2t_ranks, int(v2t_tied.sum())),
        ties=ties,
    )


def _check_tie_rule(ties: str) -> None:
    if ties not in TIE_RULES:
        raise ValueError(f"unknown tie rule {ties!r}; choose one of: {', '.join(TIE_RULES)}")


def _video_index(video_of_text: Sequence[int] | ArrayLike | None, num_texts: int, num_videos: int) -> np.ndarray:
    if video_of_text is None:
        if num_texts != num_videos:
            raise ValueError(
                f"sim has shape {(num_texts, num_videos)}: without video_of_text the ground truth is the "
                "diagonal, which needs a square matrix; pass video_of_text[i] = the video column of caption i"
            )
        return np.arange(num_texts)
    index = to_numpy(video_of_text)
    if index.ndim != 1 or index.size != num_texts:
        raise ValueError(f"video_of_text must give one video per row of sim ({num_texts}), got shape {index.shape}")
    if index.dtype == np.bool_ or not np.issubdtype(index.dtype, np.integer):
        raise ValueError(f"video_of_text must hold integer column indices, got dtype {index.dtype}")
    out_of_range = (index < 0) | (index >= num_videos)
    if out_of_range.any():
        first = int(np.argmax(out_of_range))
        raise ValueError(
            f"video_of_text[{first}] = {int(index[first])} is not a column of sim (it has {num_videos} videos)"
        )
    return index.astype(np.int64)


def _ranks_and_ties(scores: np.ndarray, positives: np.ndarray, ties: str) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks (see :func:`rank_queries`); whether each query had a negative tied with its positive."""
    ranks = np.empty(scores.shape[0], dtype=np.int64)
    tied = np.empty(scores.shape[0], dtype=bool)
    for start in range(0, scores.shape[0], _ROWS_PER_BLOCK):
        block = slice(start, start + _ROWS_PER_BLOCK)
        rows, is_positive = scores[block], positives[block]
        best_positive = np.where(is_positive, rows, -np.inf).max(axis=1, keepdims=True)
        is_negative = ~is_positive
        better = ((rows > best_positive) & is_negative).sum(axis=1)
        equal = ((rows == best_positive) & is_negative).sum(axis=1)
        ranks[block] = 1 + better + (equal if ties == "pessimistic" else 0)
        tied[block] = equal > 0
    return ranks, tied
