"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


# ---------------------------------------------------------------------------------------------------------
# evaluation fixtures (tasks / evaluator / lm-eval agreement tests)


@pytest.fixture(scope="session")
def smollm2():
    """The real pretrained SmolLM2-135M (fp32, CPU) and its tokenizer, loaded once per session."""
    from frankenlm.model.loading import load_model

    return load_model("smollm2-135m", dtype=torch.float32, device="cpu")


def _bpe_tokenizer(add_bos: bool):
    """A small byte-level BPE tokenizer trained on Python help texts; `add_bos` makes it prepend <bos> (gemma-like)."""
    from pydoc_data.topics import topics
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<bos>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([topics[k] for k in sorted(topics)[:20]], trainer)
    if add_bos:
        bos = tok.token_to_id("<bos>")
        tok.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", bos)]
        )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>")


@pytest.fixture(scope="session", params=[False, True], ids=["no-bos", "adds-bos"])
def tiny_lm(request):
    """(model, tokenizer): a random 2-layer llama over a 400-token BPE vocabulary; the tokenizer adds no BOS
    (llama/qwen-like) or prepends <bos> (gemma-like)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _bpe_tokenizer(request.param)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # random init is nearly uniform: sharpen it so that argmax/greedy checks mean something
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.eval().requires_grad_(False), tokenizer


_LMEVAL_SOURCES = {
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


def _lmeval_rows(name: str) -> list[dict]:
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
        return {"id": d["id"], question_key: unwrap(d["query"]), "choices": {"text": d["choices"], "label": labels},
                "answerKey": labels[d["gold"]]}

    if name in ("arc_easy", "arc_challenge"):
        return [labelled(d, "question") for d in read_oe_eval_docs(f"{name}/test_rc_5shot")]
    if name == "openbookqa":
        return [labelled(d, "question_stem") for d in read_oe_eval_docs("openbookqa/test_rc_5shot")]
    if name == "lambada_openai":
        return [{"text": f"{d['query']} {d['answers_text'][0]}"} for d in read_oe_eval_docs("lambada/bpb_0shot")]
    if name == "gsm8k":
        return [{"question": d["question"], "answer": d["answer"]} for d in read_oe_eval_docs("gsm8k/gold_bpb_5shot")]
    if name == "boolq":  # google boolq rows; lm-eval reads super_glue's (same items, label 1 = True)
        return [{"question": r["question"], "passage": r["passage"], "idx": i, "label": int(r["answer"])}
                for i, r in enumerate(read_hf_split("boolq/none/validation"))]
    folders = {"hellaswag": "hellaswag/none/validation", "piqa": "piqa/plain_text/validation",
               "winogrande": "winogrande/winogrande_xl/validation", "sciq": "sciq/none/validation",
               "copa": "super_glue/copa/validation"}
    if name.startswith("mmlu_"):
        return read_hf_split(f"hails/mmlu_no_train/{name[len('mmlu_'):]}/test")
    return read_hf_split(folders[name])


@pytest.fixture(scope="session")
def lmeval_task():
    """Factory: frankenlm task name (or `mmlu_<subject>`) -> lm-eval's own `ConfigurableTask`, built from
    lm-eval's YAML (prompt templates, !function utils, process_docs) with its dataset replaced by the local rows.
    Zero-shot; the splits that are not evaluated are dropped (no train split offline)."""
    pytest.importorskip("lm_eval")
    import datasets
    import lm_eval
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    tasks_dir = Path(lm_eval.__file__).parent / "tasks"
    built: dict[str, object] = {}

    def build(name: str):
        if name in built:
            return built[name]
        if name.startswith("mmlu_"):
            yaml_path, split = f"mmlu/default/{name}.yaml", "test"
        else:
            yaml_path, split = _LMEVAL_SOURCES[name]
        cfg = load_yaml(tasks_dir / yaml_path)
        dataset = datasets.Dataset.from_list(_lmeval_rows(name))
        cfg["custom_dataset"] = lambda **_: {split: dataset}
        for key in ("training_split", "validation_split", "test_split", "fewshot_split"):
            if cfg.get(key) != split:
                cfg[key] = None
        cfg[{"test": "test_split", "validation": "validation_split"}[split]] = split
        cfg.pop("fewshot_config", None)
        cfg["num_fewshot"] = 0
        task = ConfigurableTask(config=cfg)
        built[name] = task
        return task

    return build


# ---------------------------------------------------------------------------------------------------------
# frankenmodel / export fixtures: tiny random models of every supported family


@pytest.fixture(scope="module")
def bases():
    """arch → {None: tiny model (seed 0), 'b': another tiny model of the same arch (seed 1)}."""
    from tiny import ARCHS, tiny_model

    return {arch: {None: tiny_model(arch, seed=0), "b": tiny_model(arch, seed=1)} for arch in ARCHS}


@pytest.fixture(scope="module")
def ids():
    from tiny import random_ids

    return random_ids(20)
