"""Perplexity corpora scored with lm-eval `loglikelihood_rolling` semantics, and the documents they are made of.

Each document is scored on its own (never concatenated), in disjoint windows of at most the scorer's
`max_length` tokens, the first token predicted from the prefix (BOS, else EOS) token: see
`frankenlm.eval.evaluator.rolling_windows`. Metrics follow lm-eval: word_perplexity = exp(sum nll / sum words),
byte_perplexity = exp(sum nll / sum bytes), bits_per_byte = sum nll / (sum bytes * ln 2), where words are
`len(re.split(r"\\s+", text))` and bytes the UTF-8 length; token_perplexity = exp(sum nll / sum tokens) is ours
(tokenizer-dependent, so only comparable within one tokenizer).

Corpora:
- `lambada_passages`: the 5,153 LAMBADA (OpenAI) test passages as documents (text = context + " " + last word).
- `pydoc_topics`: the Python standard library's help-topic texts (`pydoc_data.topics`, one document per topic,
  sorted by name): technical English prose with code. Exact content follows the running Python version.
- `pydoc_passages`: the same texts cut at blank lines into passages of about 400-1,500 characters (paragraphs
  merged in order; a longer paragraph stays whole), ids `topic/k`: hundreds of short documents instead of 79 of
  very unequal length (a few topics hold most of the text), so that paired statistics and racing have items
  to work with and rows stay short.
- `wikitext2`: lm-eval's `wikitext` (wikitext-2-raw-v1 test, document level, lm-eval's detokenizer; words and
  bytes counted on the original page as lm-eval does); needs network access (`datasets.load_dataset`).
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from frankenlm.errors import FrankenError

from .base import Doc
from .data import read_oe_eval_docs
from .requests import Result, RollingRequest, RollingResult


def count_words(text: str) -> int:
    """lm-eval's `Task.count_words`."""
    return len(re.split(r"\s+", text))


def count_bytes(text: str) -> int:
    return len(text.encode("utf-8"))


@dataclass(frozen=True)
class RollingDoc(Doc):
    """A document scored whole: one `RollingRequest`; word and byte counts as lm-eval counts them."""

    n_words: int
    n_bytes: int

    def _result(self, responses: Sequence[Result]) -> RollingResult:
        if len(responses) != 1 or not isinstance(responses[0], RollingResult):
            raise TypeError(f"{self.task}/{self.item_id}: expected one RollingResult, got {responses!r}")
        return responses[0]

    def score(self, responses: Sequence[Result]) -> dict[str, float]:
        r = self._result(responses)
        nll = -r.logprob
        return {
            "token_perplexity": math.exp(nll / r.n_tokens),
            "word_perplexity": math.exp(nll / self.n_words),
            "byte_perplexity": math.exp(nll / self.n_bytes),
            "bits_per_byte": nll / (self.n_bytes * math.log(2)),
        }

    def extras(self, responses: Sequence[Result]) -> dict[str, Any]:
        r = self._result(responses)
        return {
            "logprob": r.logprob,
            "nll": -r.logprob,
            "n_tokens": r.n_tokens,
            "n_words": self.n_words,
            "n_bytes": self.n_bytes,
            "n_windows": r.n_windows,
            "n_input_tokens": r.n_input_tokens,
        }


def rolling_doc(task: str, item_id: str, text: str, counted_text: str | None = None) -> RollingDoc:
    """A document scoring `text`; words/bytes are counted on `counted_text` (default `text`)."""
    counted = text if counted_text is None else counted_text
    return RollingDoc(task, item_id, (RollingRequest(text),), count_words(counted), count_bytes(counted))


def load_lambada_passages(task: str) -> list[Doc]:
    docs = read_oe_eval_docs("lambada/bpb_0shot")
    return [rolling_doc(task, str(d["id"]), f"{d['query']} {d['answers_text'][0]}") for d in docs]


def load_pydoc_topics(task: str) -> list[Doc]:
    from pydoc_data.topics import topics

    return [rolling_doc(task, name, topics[name]) for name in sorted(topics) if topics[name].strip()]


def paragraph_passages(text: str, low: int = 400, high: int = 1500) -> list[str]:
    """`text` cut at blank lines into passages: paragraphs joined in order (by a blank line) while the passage
    is shorter than `low` characters or the next paragraph still fits within `high`; a paragraph longer than
    `high` is a passage of its own, and a short tail joins the passage before it."""
    out: list[str] = []
    cur = ""
    for para in re.split(r"\n[ \t]*\n", text.strip()):
        if not para.strip():
            continue
        if cur and len(cur) >= low and len(cur) + 2 + len(para) > high:
            out.append(cur)
            cur = para
        else:
            cur = f"{cur}\n\n{para}" if cur else para
    if cur:
        if out and len(cur) < low:
            out[-1] = f"{out[-1]}\n\n{cur}"
        else:
            out.append(cur)
    return out


def load_pydoc_passages(task: str) -> list[Doc]:
    from pydoc_data.topics import topics

    return [
        rolling_doc(task, f"{name}/{k}", passage)
        for name in sorted(topics)
        for k, passage in enumerate(paragraph_passages(topics[name]))
    ]


PYDOC_SOURCE = f"pydoc_data.topics of Python {'.'.join(map(str, sys.version_info[:3]))} (standard library)"


def wikitext_detokenizer(string: str) -> str:
    """lm-eval's `wikitext/preprocess_wikitext.py::wikitext_detokenizer`."""
    # contractions
    string = string.replace("s '", "s'")
    string = re.sub(r"/' [0-9]/", r"/'[0-9]/", string)
    # number separators
    string = string.replace(" @-@ ", "-")
    string = string.replace(" @,@ ", ",")
    string = string.replace(" @.@ ", ".")
    # punctuation
    string = string.replace(" : ", ": ")
    string = string.replace(" ; ", "; ")
    string = string.replace(" . ", ". ")
    string = string.replace(" ! ", "! ")
    string = string.replace(" ? ", "? ")
    string = string.replace(" , ", ", ")
    # double brackets
    string = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", string)
    string = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", string)
    string = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", string)
    string = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', string)
    string = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", string)
    # miscellaneous
    string = string.replace("= = = =", "====")
    string = string.replace("= = =", "===")
    string = string.replace("= =", "==")
    string = string.replace(" " + chr(176) + " ", chr(176))
    string = string.replace(" \n", "\n")
    string = string.replace("\n ", "\n")
    string = string.replace(" N ", " 1 ")
    string = string.replace(" 's", "'s")
    return string


WIKITEXT_DATASET = ("EleutherAI/wikitext_document_level", "wikitext-2-raw-v1")


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def load_wikitext2(task: str) -> list[Doc]:
    path, name = WIKITEXT_DATASET
    hint = f"{task} needs the Hugging Face dataset {path}/{name} (network access, and `pip install datasets`)"
    if _offline():
        raise FrankenError(
            f"{hint}, but HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set; use lambada_passages or pydoc_topics offline"
        )
    try:
        import datasets
    except ImportError:
        raise FrankenError(f"{hint}; the `datasets` package is not installed") from None
    try:
        rows = datasets.load_dataset(path, name, split="test")
    except Exception as e:  # no network, hub down, or dataset moved
        raise FrankenError(f"{hint}; loading it failed ({type(e).__name__}: {str(e)[:200]})") from None
    return [rolling_doc(task, str(i), wikitext_detokenizer(r["page"]), r["page"]) for i, r in enumerate(rows)]
