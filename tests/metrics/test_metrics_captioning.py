"""Captioning metrics: equal to pycocoevalcap's own scorers, plus cases whose values are known by hand.

The METEOR tests start Java (about 10 s once per process); they skip where Java is missing.
"""

import math
import shutil

import pytest

from meltr.metrics import TOKENIZERS, caption_metrics, close_meteor
from meltr.metrics import captioning as captioning_module

pycocoevalcap = pytest.importorskip("pycocoevalcap")
from pycocoevalcap.bleu.bleu import Bleu  # noqa: E402
from pycocoevalcap.cider.cider import Cider  # noqa: E402
from pycocoevalcap.meteor.meteor import Meteor  # noqa: E402
from pycocoevalcap.rouge.rouge import Rouge  # noqa: E402
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer  # noqa: E402

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR and PTB tokenisation need Java")

# Already tokenised (lower case, no punctuation): what coco-caption's scorers expect.
HYPOTHESES = {
    "v1": "a man is playing a guitar",
    "v2": "a woman slices an onion in the kitchen",
    "v3": "a dog runs",
    "v4": "people are dancing on a stage",
}
REFERENCES = {
    "v1": ["a man plays the guitar", "someone is playing a guitar on stage"],
    "v2": ["a woman is cutting an onion", "a lady chops onions"],
    "v3": ["a dog is running on the grass", "a puppy runs in a field", "the dog runs fast"],
    "v4": ["a group of people dance on a stage", "dancers perform"],
}


def coco(hypotheses, references):
    """The (gts, res) dictionaries pycocoevalcap's scorers take."""
    return {k: list(references[k]) for k in hypotheses}, {k: [hypotheses[k]] for k in hypotheses}


@pytest.fixture(scope="module")
def meteor_process():
    """Close this process's shared METEOR at the end, so no Java outlives the module."""
    yield
    close_meteor()


@needs_java
def test_all_scores_equal_pycocoevalcaps_own_scorers(meteor_process):
    gts, res = coco(HYPOTHESES, REFERENCES)
    ours = caption_metrics(HYPOTHESES, REFERENCES, tokenizer="none")
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge_l, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    # pycocoevalcap's Meteor.compute_score, called directly on the JVM already running (a second JVM costs
    # another ~10 s; test_meteor_equals_a_fresh_pycocoevalcap_meteor does that, marked slow).
    meteor_score, _ = Meteor.compute_score(captioning_module._shared_meteor()._scorer, gts, res)

    assert ours.bleu_1 == pytest.approx(100 * bleu[0], rel=1e-12)
    assert ours.bleu_2 == pytest.approx(100 * bleu[1], rel=1e-12)
    assert ours.bleu_3 == pytest.approx(100 * bleu[2], rel=1e-12)
    assert ours.bleu_4 == pytest.approx(100 * bleu[3], rel=1e-12)
    assert ours.meteor == pytest.approx(100 * meteor_score, rel=1e-12)
    assert ours.rouge_l == pytest.approx(100 * rouge_l, rel=1e-12)
    assert ours.cider == pytest.approx(cider, rel=1e-12)  # raw, as Table 7 prints it
    assert 0 < ours.meteor < 100 and 0 < ours.bleu_4 < 100
    assert ours.num_captions == 4


@pytest.mark.slow
@needs_java
def test_meteor_equals_a_fresh_pycocoevalcap_meteor(meteor_process):
    gts, res = coco(HYPOTHESES, REFERENCES)
    reference_meteor = Meteor()
    try:
        expected, _ = reference_meteor.compute_score(gts, res)
    finally:
        reference_meteor.meteor_p.kill()
        reference_meteor.meteor_p.wait()
    ours = caption_metrics(HYPOTHESES, REFERENCES, tokenizer="none")
    assert ours.meteor == pytest.approx(100 * expected, rel=1e-12)


@needs_java
def test_meteor_process_is_reused_and_closed(meteor_process):
    first = captioning_module._shared_meteor()
    again = caption_metrics({"a": "a dog runs"}, {"a": ["a dog runs fast"]}, tokenizer="none")
    assert captioning_module._shared_meteor() is first  # no second JVM
    assert again.meteor is not None and again.meteor > 0
    close_meteor()
    assert not first.alive


@needs_java
def test_a_stuck_meteor_call_times_out_instead_of_hanging():
    # The JVM needs seconds to load its paraphrase table: a 0.3 s budget cannot be met.
    process = captioning_module._MeteorProcess()
    with pytest.raises(TimeoutError, match="meteor_timeout"):
        process.score({0: ["a dog runs"]}, {0: ["a dog runs"]}, timeout=0.3)
    assert not process.alive


def test_identical_hypothesis_and_reference_score_100():
    caption = "a man is slicing a red tomato"
    scores = caption_metrics([caption], [[caption]], meteor=False, tokenizer="none")
    # pycocoevalcap smooths each n-gram precision by (matches + 1e-15) / (total + 1e-9): 100 up to 1e-7.
    for value in (scores.bleu_1, scores.bleu_2, scores.bleu_3, scores.bleu_4):
        assert value == pytest.approx(100.0, abs=1e-6)
    assert scores.rouge_l == pytest.approx(100.0)
    assert scores.meteor is None
    assert "METEOR" not in scores.as_dict()


def test_bleu_and_rouge_by_hand():
    # hypothesis "a b c d" vs reference "a b c e", same length (brevity penalty 1):
    #   n-gram matches / totals: 3/4, 2/3, 1/2, 0/1; BLEU-n = geometric mean of the first n precisions.
    #   coco-caption smooths each precision to (matches + 1e-15) / (total + 1e-9), so BLEU-4 is not 0 but
    #   (3/4 * 2/3 * 1/2 * 1e-15) ** (1/4) = 1.26e-4.
    #   ROUGE-L: LCS = 3, P = R = 3/4, F_beta = (1 + b^2) P R / (R + b^2 P) = 3/4.
    scores = caption_metrics(["a b c d"], [["a b c e"]], meteor=False, tokenizer="none")
    assert scores.bleu_1 == pytest.approx(100 * 3 / 4, rel=1e-6)
    assert scores.bleu_2 == pytest.approx(100 * math.sqrt(3 / 4 * 2 / 3), rel=1e-6)
    assert scores.bleu_3 == pytest.approx(100 * (3 / 4 * 2 / 3 * 1 / 2) ** (1 / 3), rel=1e-6)
    assert scores.bleu_4 == pytest.approx(100 * (3 / 4 * 2 / 3 * 1 / 2 * 1e-15) ** (1 / 4), rel=1e-6)
    assert scores.rouge_l == pytest.approx(75.0)


def test_cider_by_hand():
    # Two videos, each captioned exactly like its one reference, no n-gram shared between them: every n-gram
    # has idf log(2/1), the tf-idf vectors of hypothesis and reference coincide (cosine 1), the length penalty
    # is exp(0) = 1, so CIDEr-D = 10 * mean over n of 1 = 10.
    hypotheses = ["a man rides a horse", "two cats sleep together"]
    scores = caption_metrics(hypotheses, [[h] for h in hypotheses], meteor=False, tokenizer="none")
    assert scores.cider == pytest.approx(10.0)
    # One video alone: every n-gram occurs in all (one) reference sets, idf = log(1) = 0, so CIDEr is 0. CIDEr
    # is a corpus statistic: score the whole test set at once, never averages of per-batch values.
    alone = caption_metrics(hypotheses[:1], [hypotheses[:1]], meteor=False, tokenizer="none")
    assert alone.cider == 0.0


def test_input_forms_agree():
    as_dict = caption_metrics(HYPOTHESES, REFERENCES, meteor=False, tokenizer="none")
    keys = list(HYPOTHESES)
    as_lists = caption_metrics(
        [HYPOTHESES[k] for k in keys], [REFERENCES[k] for k in keys], meteor=False, tokenizer="none"
    )
    coco_style = caption_metrics({k: [v] for k, v in HYPOTHESES.items()}, REFERENCES, meteor=False, tokenizer="none")
    assert as_dict == as_lists == coco_style
    one_string = caption_metrics(["a dog runs"], ["a dog runs fast"], meteor=False, tokenizer="none")
    one_list = caption_metrics(["a dog runs"], [["a dog runs fast"]], meteor=False, tokenizer="none")
    assert one_string == one_list


@needs_java
def test_ptb_tokenisation_matches_pycocoevalcaps_tokenizer():
    sentences = [
        "A man, playing the guitar!",
        "The chef's knife -- slicing (quickly) the onions...",
        "Isn't it a dog? Yes; it runs.",
        "",
        "last one.",
    ]
    theirs = PTBTokenizer().tokenize({i: [{"caption": s}] for i, s in enumerate(sentences)})
    assert TOKENIZERS.get("ptb")(sentences) == [theirs[i][0] for i in range(len(sentences))]


@needs_java
def test_ptb_keeps_captions_aligned_across_line_breaks():
    # pycocoevalcap's PTBTokenizer reads "\r" as a line break and shifts every later caption by one.
    tokens = TOKENIZERS.get("ptb")(["A dog\r runs.", "A cat\nsleeps.", "Birds fly."])
    assert tokens == ["a dog runs", "a cat sleeps", "birds fly"]


def test_simple_and_none_tokenisers():
    simple = caption_metrics(["A man, playing guitar!"], ["a man playing guitar"], meteor=False, tokenizer="simple")
    assert simple.bleu_4 == pytest.approx(100.0, abs=1e-6)
    assert TOKENIZERS.get("simple")(["A T-shirt, the man's hat!"]) == ["a t-shirt the man's hat"]
    assert TOKENIZERS.get("none")([" a  b\n c "]) == ["a b c"]


@pytest.mark.parametrize(
    ("hypotheses", "references", "message"),
    [
        ([], [], "hypotheses is empty"),
        (["a b"], [], "references is empty"),
        (["a b", "c d"], [["a b"]], "hypotheses has 2, references has 1"),
        ({"x": "a b"}, {"y": ["a b"]}, "video ids"),
        ({"x": "a b"}, [["a b"]], "both be mappings"),
        ([3], [["a b"]], r"hypotheses\[0\]"),
        (["a b"], [[]], r"references\[0\]"),
        (["a b"], [["a b", 7]], r"references\[0\]\[1\]"),
        (["a b"], [["..."]], "empty after 'simple' tokenisation"),
        ("a b", ["a b"], "hypotheses"),
    ],
)
def test_bad_caption_inputs_fail_naming_the_argument(hypotheses, references, message):
    with pytest.raises(ValueError, match=message):
        caption_metrics(hypotheses, references, meteor=False, tokenizer="simple")


def test_unknown_tokenizer_lists_the_choices():
    with pytest.raises(KeyError, match="none, ptb, simple"):
        caption_metrics(["a b"], [["a b"]], meteor=False, tokenizer="bert")
