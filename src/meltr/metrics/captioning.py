"""Video captioning: BLEU-1..4, METEOR, ROUGE-L and CIDEr with the coco-caption scorers (``pycocoevalcap``).

The scores are those of Tables 4, 5 and 7 of MELTR. Every number comes from ``pycocoevalcap``'s own scorer
classes (``Bleu(4)``, ``Meteor``, ``Rouge``, ``Cider``) on the tokenised captions; this module only prepares
their input and reports their output:

- BLEU-n: corpus-level BLEU with the "closest" reference length for the brevity penalty.
- METEOR 1.5 (``-l en -norm``): run by a Java subprocess, see "METEOR" below.
- ROUGE-L: sentence-level LCS F-measure (beta = 1.2), averaged over captions.
- CIDEr: coco-caption's ``Cider`` class, which is CIDEr-D (Gaussian length penalty sigma = 6, clipped counts,
  times 10); its idf comes from the references of the evaluated set, so it is a corpus-level quantity.

Units, as the papers print them: BLEU, METEOR and ROUGE-L in percent; CIDEr as the scorer returns it. MELTR is
not consistent about CIDEr: Table 7 prints the raw value (1.90) while Tables 4 and 5 print it times 100 (190,
for the same UniVL + MELTR V+T model). Multiply :attr:`CaptionScores.cider` by 100 to compare with Tables 4
and 5.

Tokenisation (``tokenizer=``, registered in :data:`TOKENIZERS`):

- ``"ptb"`` (default): the coco-caption pipeline. Stanford CoreNLP's PTBTokenizer (the jar ``pycocoevalcap``
  ships; needs Java, runs offline), lower-cased, with coco-caption's punctuation tokens removed. Equivalent to
  ``pycocoevalcap``'s ``PTBTokenizer`` except that the text goes through stdin as UTF-8, so nothing is written
  inside ``site-packages`` and line breaks inside a caption cannot shift captions out of alignment.
- ``"simple"``: a Java-free approximation: lower-case, split words from punctuation, drop the punctuation.
  Close to PTB but not identical (e.g. PTB splits "don't" into "do n't"), so do not compare its numbers with
  PTB ones.
- ``"none"``: whitespace normalisation only, for captions that are already tokenised. This is what the UniVL
  and MELTR code does: it decodes BERT word pieces (lower-cased, punctuation split off) and hands them to
  ``nlg-eval``, which runs the same scorers without PTB tokenisation.

METEOR: the first call starts one Java process (about 10 s, mostly loading the paraphrase table); later calls
in the same process reuse it. A lock serialises calls from threads; a forked child starts its own process
instead of writing into its parent's pipes; a watchdog kills the process if a call exceeds ``meteor_timeout``
seconds, so a stuck JVM raises instead of hanging; the process is stopped at interpreter exit or by
:func:`close_meteor`. Pass ``meteor=False`` to skip METEOR (and Java) entirely.
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meltr._registry import Registry
from meltr.metrics._inputs import percent

TOKENIZERS: Registry[list[str]] = Registry("caption tokenizer")

_INSTALL_HINT = "install it with `pip install pycocoevalcap` (or `pip install meltr[caption]`)"


@dataclass(frozen=True)
class CaptionScores:
    """Captioning scores in the units of MELTR's tables.

    Attributes:
        bleu_1: corpus BLEU-1 in percent.
        bleu_2: corpus BLEU-2 in percent.
        bleu_3: corpus BLEU-3 in percent.
        bleu_4: corpus BLEU-4 in percent.
        meteor: METEOR in percent; ``None`` when skipped (``meteor=False``).
        rouge_l: ROUGE-L in percent.
        cider: CIDEr-D as coco-caption returns it (Table 7 of MELTR; Tables 4 and 5 print it times 100).
        num_captions: how many hypotheses were scored.
        tokenizer: the tokenisation used.
    """

    bleu_1: float
    bleu_2: float
    bleu_3: float
    bleu_4: float
    meteor: float | None
    rouge_l: float
    cider: float
    num_captions: int
    tokenizer: str

    def as_dict(self) -> dict[str, float]:
        """``{"BLEU-1": ..., "BLEU-4": ..., "METEOR": ..., "ROUGE-L": ..., "CIDEr": ...}``; METEOR if run."""
        values = {
            "BLEU-1": self.bleu_1,
            "BLEU-2": self.bleu_2,
            "BLEU-3": self.bleu_3,
            "BLEU-4": self.bleu_4,
            "METEOR": self.meteor,
            "ROUGE-L": self.rouge_l,
            "CIDEr": self.cider,
        }
        return {name: value for name, value in values.items() if value is not None}


def caption_metrics(
    hypotheses: Mapping[Any, str] | Sequence[str],
    references: Mapping[Any, Sequence[str] | str] | Sequence[Sequence[str] | str],
    *,
    meteor: bool = True,
    tokenizer: str = "ptb",
    meteor_timeout: float = 600.0,
) -> CaptionScores:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr of generated captions (Tables 4, 5 and 7 of MELTR).

    Args:
        hypotheses: one generated caption per video: a mapping ``video id -> caption`` or a list (the index is
            the id). A one-element list per video (coco-caption's own format) is accepted too.
        references: the ground-truth captions per video, in the same form as ``hypotheses`` (mapping with the
            same keys, or a list of the same length); each entry a list of one or more captions, or one
            string.
        meteor: run METEOR (needs Java; about 10 s the first time in a process). ``False`` skips it.
        tokenizer: ``"ptb"`` (default, coco-caption), ``"simple"`` or ``"none"``; see the module docstring.
        meteor_timeout: seconds one METEOR call may take before its Java process is killed.

    Returns:
        :class:`CaptionScores`.

    Raises:
        ValueError: empty inputs, mismatched ids or lengths, a caption that is not a string, a video without
            references, or a reference that is empty after tokenisation. The message names the argument.
        KeyError: an unknown ``tokenizer``; the message lists the registered ones.
        RuntimeError: Java or ``pycocoevalcap`` is missing, or the METEOR process failed; the message says how
            to skip METEOR.
        TimeoutError: METEOR took longer than ``meteor_timeout`` (its process is then stopped).
    """
    hypothesis_by_id, references_by_id = _align(hypotheses, references)
    tokenize = TOKENIZERS.get(tokenizer)
    ids = list(hypothesis_by_id)
    flat_references = [ref for key in ids for ref in references_by_id[key]]
    tokens = tokenize([hypothesis_by_id[key] for key in ids] + flat_references)
    res = {index: [tokens[index]] for index in range(len(ids))}
    gts: dict[int, list[str]] = {}
    cursor = len(ids)
    for index, key in enumerate(ids):
        count = len(references_by_id[key])
        gts[index] = tokens[cursor : cursor + count]
        cursor += count
        for position, reference in enumerate(gts[index]):
            if not reference:
                raise ValueError(
                    f"references[{key!r}][{position}] is empty after {tokenizer!r} tokenisation "
                    f"(was {references_by_id[key][position]!r}); remove it"
                )

    scorers = _pycocoevalcap()
    bleu, _ = scorers["Bleu"](4).compute_score(gts, res, verbose=0)
    rouge_l, _ = scorers["Rouge"]().compute_score(gts, res)
    cider, _ = scorers["Cider"]().compute_score(gts, res)
    meteor_score = _shared_meteor().score(gts, res, timeout=meteor_timeout) if meteor else None
    return CaptionScores(
        bleu_1=percent(bleu[0]),
        bleu_2=percent(bleu[1]),
        bleu_3=percent(bleu[2]),
        bleu_4=percent(bleu[3]),
        meteor=None if meteor_score is None else percent(meteor_score),
        rouge_l=percent(rouge_l),
        cider=float(cider),
        num_captions=len(ids),
        tokenizer=tokenizer,
    )


# ------------------------------------------------------------------------------------------- input alignment


def _align(
    hypotheses: Mapping[Any, Any] | Sequence[Any], references: Mapping[Any, Any] | Sequence[Any]
) -> tuple[dict[Any, str], dict[Any, list[str]]]:
    """Both inputs as ``id -> caption`` and ``id -> [references]`` with the same ids, validated."""
    hyp_is_map, ref_is_map = isinstance(hypotheses, Mapping), isinstance(references, Mapping)
    for name, value in (("hypotheses", hypotheses), ("references", references)):
        if isinstance(value, str) or not isinstance(value, Mapping | Sequence):
            raise ValueError(f"{name} must be a mapping id -> caption(s) or a list, got {type(value).__name__}")
        if len(value) == 0:
            raise ValueError(f"{name} is empty; the metric needs at least one caption")
    if hyp_is_map != ref_is_map:
        raise ValueError(
            "hypotheses and references must both be mappings (keyed by video id) or both be lists, got "
            f"{type(hypotheses).__name__} and {type(references).__name__}"
        )
    if hyp_is_map:
        missing = [key for key in hypotheses if key not in references]
        extra = [key for key in references if key not in hypotheses]
        if missing or extra:
            raise ValueError(
                f"hypotheses and references disagree on the video ids: {len(missing)} id(s) without "
                f"references (e.g. {missing[:3]}), {len(extra)} id(s) without a hypothesis (e.g. {extra[:3]})"
            )
        hypothesis_items = list(hypotheses.items())
    else:
        if len(hypotheses) != len(references):
            raise ValueError(
                f"inputs disagree on the number of videos: hypotheses has {len(hypotheses)}, "
                f"references has {len(references)}"
            )
        hypothesis_items = list(enumerate(hypotheses))

    hypothesis_by_id: dict[Any, str] = {}
    references_by_id: dict[Any, list[str]] = {}
    for key, hypothesis in hypothesis_items:
        if isinstance(hypothesis, list | tuple) and len(hypothesis) == 1:
            hypothesis = hypothesis[0]
        if not isinstance(hypothesis, str):
            raise ValueError(f"hypotheses[{key!r}] must be one caption string, got {hypothesis!r}")
        hypothesis_by_id[key] = hypothesis
        refs = references[key]
        refs = [refs] if isinstance(refs, str) else refs
        if not isinstance(refs, Sequence) or len(refs) == 0:
            raise ValueError(f"references[{key!r}] must be one or more caption strings, got {refs!r}")
        for position, reference in enumerate(refs):
            if not isinstance(reference, str):
                raise ValueError(f"references[{key!r}][{position}] must be a string, got {reference!r}")
        references_by_id[key] = list(refs)
    return hypothesis_by_id, references_by_id


# ------------------------------------------------------------------------------------------------- tokenisers


def _one_line(text: str) -> str:
    """Collapse every whitespace run (line breaks included) to one space: one caption stays one line."""
    return " ".join(text.split())


@TOKENIZERS.register("none")
def whitespace_tokenize(sentences: list[str]) -> list[str]:
    """Captions that are already tokenised: whitespace normalised only (the UniVL / nlg-eval path)."""
    return [_one_line(sentence) for sentence in sentences]


# A word: letters/digits, with inner hyphens or apostrophes ("t-shirt", "man's"); everything else is dropped.
_WORD = re.compile(r"\w+(?:[-'’]\w+)*")


@TOKENIZERS.register("simple")
def simple_tokenize(sentences: list[str]) -> list[str]:
    """Lower-case and keep the words, dropping punctuation and symbols (a Java-free approximation of PTB)."""
    return [" ".join(_WORD.findall(sentence.lower())) for sentence in sentences]


@TOKENIZERS.register("ptb")
def ptb_tokenize(sentences: list[str]) -> list[str]:
    """coco-caption's PTB tokenisation: Stanford PTBTokenizer, lower-cased, its punctuation tokens removed.

    Raises:
        RuntimeError: Java or ``pycocoevalcap`` is missing, or the tokenizer failed.
    """
    try:
        from pycocoevalcap.tokenizer import ptbtokenizer
    except ImportError:
        raise RuntimeError(f"the 'ptb' tokenizer needs pycocoevalcap; {_INSTALL_HINT}") from None
    jar = Path(ptbtokenizer.__file__).with_name(ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR)
    command = [
        "java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer",
        "-preserveLines", "-lowerCase", "-encoding", "utf-8",
    ]  # fmt: skip
    lines = "".join(_one_line(sentence) + "\n" for sentence in sentences)
    try:
        finished = subprocess.run(command, input=lines.encode("utf-8"), capture_output=True, check=False)
    except FileNotFoundError:
        raise RuntimeError(
            "the 'ptb' tokenizer needs Java on the PATH; install a JRE or pass tokenizer='simple'"
        ) from None
    output = finished.stdout.decode("utf-8").split("\n")
    if finished.returncode != 0 or len(output) != len(sentences) + 1:
        raise RuntimeError(
            f"PTBTokenizer failed (exit code {finished.returncode}, {len(output) - 1} lines for "
            f"{len(sentences)} captions): {finished.stderr.decode('utf-8', 'replace')[-500:]}"
        )
    punctuation = set(ptbtokenizer.PUNCTUATIONS)
    return [" ".join(token for token in line.split(" ") if token and token not in punctuation) for line in output[:-1]]


# ---------------------------------------------------------------------------------------------------- METEOR


def _pycocoevalcap() -> dict[str, type]:
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError:
        raise RuntimeError(f"captioning metrics need pycocoevalcap; {_INSTALL_HINT}") from None
    return {"Bleu": Bleu, "Cider": Cider, "Rouge": Rouge}


@functools.cache
def _owned_meteor_class() -> type:
    """pycocoevalcap's ``Meteor`` minus its ``__del__``, which blocks on a lock a failed call left held."""
    try:
        from pycocoevalcap.meteor.meteor import Meteor
    except ImportError:
        raise RuntimeError(f"METEOR needs pycocoevalcap; {_INSTALL_HINT}, or pass meteor=False") from None

    class _OwnedMeteor(Meteor):
        def __del__(self) -> None:  # the owning _MeteorProcess stops the Java process
            pass

    return _OwnedMeteor


class _MeteorProcess:
    """One pycocoevalcap ``Meteor`` scorer (one Java process), a watchdog, and a close that cannot deadlock.

    The scoring itself is ``Meteor.compute_score``, unchanged.
    """

    def __init__(self) -> None:
        self.owner_pid = os.getpid()
        self._call_lock = threading.Lock()
        self._timed_out = False
        try:
            self._scorer = _owned_meteor_class()()
        except FileNotFoundError:
            raise RuntimeError("METEOR needs Java on the PATH; install a JRE or pass meteor=False") from None
        self._process: subprocess.Popen = self._scorer.meteor_p

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def score(self, gts: dict[int, list[str]], res: dict[int, list[str]], *, timeout: float) -> float:
        """Corpus METEOR (a fraction) of tokenised captions, as ``Meteor.compute_score`` returns it."""
        # "|||" separates fields in METEOR's stdin protocol; pycocoevalcap strips it from hypotheses only.
        gts = {key: [ref.replace("|||", "") for ref in refs] for key, refs in gts.items()}
        with self._call_lock:
            watchdog = threading.Timer(timeout, self._kill_on_timeout)
            watchdog.daemon = True
            watchdog.start()
            try:
                score, _ = self._scorer.compute_score(gts, res)
            except (ValueError, OSError) as error:
                self.close()
                if self._timed_out:
                    raise TimeoutError(
                        f"METEOR did not answer within {timeout} s and was stopped; raise meteor_timeout "
                        "or pass meteor=False"
                    ) from None
                raise RuntimeError(
                    f"METEOR's Java process failed ({error!r}); its stderr: {self._stderr_tail()!r}. "
                    "Pass meteor=False to skip METEOR"
                ) from None
            finally:
                watchdog.cancel()
        return float(score)

    def _kill_on_timeout(self) -> None:
        self._timed_out = True
        self._process.kill()

    def _stderr_tail(self) -> str:
        try:
            return self._process.stderr.read().decode("utf-8", "replace")[-500:]
        except (OSError, ValueError):
            return ""

    def close(self) -> None:
        """Stop the Java process (only from the process that started it: a forked child leaves it alone)."""
        if os.getpid() != self.owner_pid:
            return
        # Kill before closing stdin: flushing into a JVM that stopped reading could block.
        if self.alive:
            self._process.kill()
        try:
            self._process.stdin.close()
        except OSError:
            pass
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._process.stdout.close()

    def __del__(self) -> None:
        if not hasattr(self, "_process"):  # the constructor failed before the process started
            return
        self.close()
        if os.getpid() == self.owner_pid:
            self._process.stderr.close()


_shared_lock = threading.Lock()
_shared: _MeteorProcess | None = None


def _shared_meteor() -> _MeteorProcess:
    """This Python process's METEOR process: started on first use, restarted if it died or we forked."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared.owner_pid != os.getpid() or not _shared.alive:
            _shared = _MeteorProcess()
        return _shared


def close_meteor() -> None:
    """Stop this process's METEOR Java process, if one is running (also done automatically at exit)."""
    global _shared
    with _shared_lock:
        if _shared is not None:
            _shared.close()
            _shared = None


atexit.register(close_meteor)
