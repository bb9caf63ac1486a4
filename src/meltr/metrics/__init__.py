"""The standard metrics of the four downstream tasks, in the units of MELTR's tables (Sec. 5).

- Retrieval (Tables 1, 2): :func:`retrieval_metrics` -> R@1/5/10 (percent), median and mean rank, t2v and v2t.
- Captioning (Tables 4, 5, 7): :func:`caption_metrics` -> BLEU-1..4, METEOR, ROUGE-L (percent), CIDEr (raw).
- Video QA (Table 3): :func:`qa_metrics` -> accuracy (percent), overall and per question type.
- Sentiment, CMU-MOSI (Table 6): :func:`sentiment_metrics` -> BA, F1 (percent), MAE, Corr, Acc-7 (percent).

Each module's docstring states the convention it follows (tie rule, tokenisation, binary split).
"""

from meltr.metrics.captioning import TOKENIZERS, CaptionScores, caption_metrics, close_meteor
from meltr.metrics.qa import QAScores, qa_metrics
from meltr.metrics.retrieval import (
    TIE_RULES,
    RankScores,
    RetrievalScores,
    rank_queries,
    retrieval_metrics,
    summarize_ranks,
)
from meltr.metrics.sentiment import BINARY_CONVENTIONS, SentimentScores, sentiment_metrics, weighted_f1

__all__ = [
    "BINARY_CONVENTIONS",
    "TIE_RULES",
    "TOKENIZERS",
    "CaptionScores",
    "QAScores",
    "RankScores",
    "RetrievalScores",
    "SentimentScores",
    "caption_metrics",
    "close_meteor",
    "qa_metrics",
    "rank_queries",
    "retrieval_metrics",
    "sentiment_metrics",
    "summarize_ranks",
    "weighted_f1",
]
