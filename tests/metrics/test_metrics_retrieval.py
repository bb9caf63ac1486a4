"""Retrieval metrics on hand-made similarity matrices with ties; every expected rank is worked out by hand."""

import numpy as np
import pytest
import torch

from meltr.metrics import rank_queries, retrieval_metrics, summarize_ranks

# Texts are rows, videos columns; text i describes video i.
TIED = np.array(
    [
        [0.9, 0.9, 0.1, 0.0],  # t0: positive 0.9, v1 ties it                 -> pessimistic 2, optimistic 1
        [0.5, 0.2, 0.5, 0.5],  # t1: positive 0.2, three negatives above it   -> 4 either way
        [0.3, 0.3, 0.3, 0.3],  # t2: positive 0.3, all three negatives tie    -> pessimistic 4, optimistic 1
        [0.0, 0.1, 0.3, 0.7],  # t3: positive 0.7, the best                   -> 1
    ]
)
# Video columns of TIED, each with its own caption as the positive:
#   v0 = (0.9, 0.5, 0.3, 0.0): positive 0.9, the best                      -> 1
#   v1 = (0.9, 0.2, 0.3, 0.1): positive 0.2, below 0.9 and 0.3             -> 3
#   v2 = (0.1, 0.5, 0.3, 0.3): positive 0.3, below 0.5, tied with t3's     -> pessimistic 3, optimistic 2
#   v3 = (0.0, 0.5, 0.3, 0.7): positive 0.7, the best                      -> 1


def test_pessimistic_ranks_of_a_matrix_with_ties():
    scores = retrieval_metrics(TIED)
    assert scores.ties == "pessimistic"
    np.testing.assert_array_equal(scores.t2v.ranks, [2, 4, 4, 1])
    assert scores.t2v.r1 == pytest.approx(25.0)
    assert scores.t2v.r5 == pytest.approx(100.0)
    assert scores.t2v.r10 == pytest.approx(100.0)
    assert scores.t2v.median_rank == pytest.approx(3.0)  # median of 1, 2, 4, 4
    assert scores.t2v.mean_rank == pytest.approx(11 / 4)
    assert scores.t2v.num_queries == 4
    assert scores.t2v.num_tied_queries == 2  # t0 and t2

    np.testing.assert_array_equal(scores.v2t.ranks, [1, 3, 3, 1])
    assert scores.v2t.r1 == pytest.approx(50.0)
    assert scores.v2t.median_rank == pytest.approx(2.0)
    assert scores.v2t.mean_rank == pytest.approx(2.0)
    assert scores.v2t.num_tied_queries == 1  # v2


def test_optimistic_ranks_of_a_matrix_with_ties():
    scores = retrieval_metrics(TIED, ties="optimistic")
    np.testing.assert_array_equal(scores.t2v.ranks, [1, 4, 1, 1])
    assert scores.t2v.r1 == pytest.approx(75.0)
    assert scores.t2v.median_rank == pytest.approx(1.0)
    assert scores.t2v.mean_rank == pytest.approx(7 / 4)
    np.testing.assert_array_equal(scores.v2t.ranks, [1, 3, 2, 1])
    assert scores.v2t.median_rank == pytest.approx(1.5)


def test_a_constant_matrix_earns_nothing_under_the_pessimistic_rule():
    constant = np.ones((5, 5))
    pessimistic = retrieval_metrics(constant)
    np.testing.assert_array_equal(pessimistic.t2v.ranks, [5] * 5)
    assert pessimistic.t2v.r1 == 0.0 and pessimistic.t2v.r5 == 100.0
    optimistic = retrieval_metrics(constant, ties="optimistic")
    np.testing.assert_array_equal(optimistic.t2v.ranks, [1] * 5)


def test_several_captions_per_video_and_a_video_without_caption():
    # Texts 0, 1 describe video 0; text 2 video 1; texts 3, 4 video 2; video 3 is a caption-less distractor.
    sim = np.array(
        [
            [0.8, 0.1, 0.2, 0.9],  # t0 -> v0 (0.8): v3 above            -> 2
            [0.4, 0.6, 0.1, 0.0],  # t1 -> v0 (0.4): v1 above            -> 2
            [0.2, 0.7, 0.7, 0.1],  # t2 -> v1 (0.7): v2 ties             -> pessimistic 2
            [0.0, 0.1, 0.5, 0.2],  # t3 -> v2 (0.5): the best            -> 1
            [0.3, 0.2, 0.1, 0.4],  # t4 -> v2 (0.1): three above         -> 4
        ]
    )
    scores = retrieval_metrics(sim, video_of_text=[0, 0, 1, 2, 2])
    np.testing.assert_array_equal(scores.t2v.ranks, [2, 2, 2, 1, 4])
    # v2t queries v0, v1, v2 only. A video's rank is that of its best caption; its other captions don't count:
    #   v0 column (0.8, 0.4, 0.2, 0.0, 0.3): best positive t0 = 0.8                          -> 1
    #   v1 column (0.1, 0.6, 0.7, 0.1, 0.2): positive t2 = 0.7                                -> 1
    #   v2 column (0.2, 0.1, 0.7, 0.5, 0.1): best positive t3 = 0.5, only t2 (0.7) above it   -> 2
    np.testing.assert_array_equal(scores.v2t.ranks, [1, 1, 2])
    assert scores.v2t.num_queries == 3


def test_without_ties_ranks_match_the_argsort_convention_of_univl_and_clip4clip():
    rng = np.random.default_rng(0)
    sim = rng.standard_normal((40, 40))
    order = np.argsort(-sim, axis=1)
    reference = np.array([int(np.nonzero(order[i] == i)[0][0]) + 1 for i in range(40)])
    for ties in ("pessimistic", "optimistic"):
        scores = retrieval_metrics(sim, ties=ties)
        np.testing.assert_array_equal(scores.t2v.ranks, reference)
        assert scores.t2v.num_tied_queries == 0
        assert scores.t2v.r1 == pytest.approx(100 * np.mean(reference == 1))
        assert scores.t2v.median_rank == pytest.approx(np.median(reference))


def test_tensor_input_in_half_precision_keeps_its_ties():
    as_tensor = torch.tensor(TIED, dtype=torch.float16)
    scores = retrieval_metrics(as_tensor)
    # Equal fp16 values stay equal when widened, so the ties survive the conversion.
    np.testing.assert_array_equal(scores.t2v.ranks, [2, 4, 4, 1])


def test_masked_pairs_at_minus_infinity_are_allowed():
    sim = np.array([[1.0, -np.inf], [-np.inf, -np.inf]])
    scores = retrieval_metrics(sim)
    np.testing.assert_array_equal(scores.t2v.ranks, [1, 2])  # t1: its positive ties the other -inf


def test_rank_queries_with_a_mask_and_summary():
    scores = np.array([[0.1, 0.5, 0.5, 0.2]])
    positives = np.array([[False, True, False, True]])
    # best positive 0.5; negatives 0.1 (below) and 0.5 (tied)
    assert rank_queries(scores, positives).tolist() == [2]
    assert rank_queries(scores, positives, ties="optimistic").tolist() == [1]

    summary = summarize_ranks(np.array([1, 3, 6, 12]))
    assert (summary.r1, summary.r5, summary.r10) == (25.0, 50.0, 75.0)
    assert summary.median_rank == pytest.approx(4.5)
    assert summary.mean_rank == pytest.approx(5.5)
    assert summary.recall_at(12) == pytest.approx(100.0)
    assert summary.as_dict("t2v/") == {
        "t2v/R@1": 25.0,
        "t2v/R@5": 50.0,
        "t2v/R@10": 75.0,
        "t2v/MdR": 4.5,
        "t2v/MnR": 5.5,
    }


def test_report_flattens_both_directions():
    flat = retrieval_metrics(TIED).as_dict()
    assert flat["t2v/R@1"] == pytest.approx(25.0)
    assert flat["v2t/R@1"] == pytest.approx(50.0)
    assert len(flat) == 10


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: retrieval_metrics(np.ones((2, 3))), "video_of_text"),
        (lambda: retrieval_metrics(np.ones((2, 3)), video_of_text=[0, 3]), r"video_of_text\[1\]"),
        (lambda: retrieval_metrics(np.ones((2, 2)), video_of_text=[0.0, 1.0]), "integer"),
        (lambda: retrieval_metrics(np.ones(4)), "sim"),
        (lambda: retrieval_metrics(TIED, ties="average"), "pessimistic, optimistic"),
        (lambda: rank_queries(np.ones((2, 2)), np.array([[True, False], [False, False]])), "query 1"),
        (lambda: rank_queries(np.ones((2, 2)), np.ones((2, 2))), "boolean"),
        (lambda: summarize_ranks(np.array([0, 1])), "1-based"),
    ],
)
def test_bad_retrieval_inputs_fail_with_a_clear_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()
