"""lm-evaluation-harness integration (optional extra `frankenlm[lmeval]`): a registered model type `frankenlm`.

    frankenlm lm-eval run --model frankenlm --model_args model=smollm2-135m,plan=0..15;10..29 --tasks arc_easy
    python -m frankenlm.eval.lmeval run --model frankenlm --model_args ... --tasks ...

lm-eval discovers model types only among its own modules, so a bare `lm_eval` command does not see this one;
the two entry points above import it first and then run lm-eval's own CLI unchanged. In Python, importing this
module is enough: `lm_eval.simple_evaluate(model="frankenlm", model_args=...)`.

lm-eval splits `--model_args` on commas, so write plan commas as ';' (`plan=0..15;10..29`), or use
`plan_file=PATH` (plan text or a mergekit YAML).
"""

from __future__ import annotations

import sys
from pathlib import Path

from frankenlm.errors import FrankenError

try:
    from lm_eval.api.registry import register_model
    from lm_eval.models.huggingface import HFLM
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise FrankenError("the lm-eval integration needs lm-eval: pip install 'frankenlm[lmeval]'") from e


def _plan_from_args(plan: str | None, plan_file: str | None):
    from frankenlm.model.mergekit import from_mergekit
    from frankenlm.model.plan import parse_plan

    if plan_file:
        p = Path(plan_file)
        if not p.is_file():
            raise FrankenError(f"plan_file {plan_file!r} does not exist")
        text = p.read_text()
        return from_mergekit(text)[0] if p.suffix in (".yaml", ".yml") else parse_plan(text.strip())
    if plan:
        return parse_plan(str(plan).replace(";", ",").replace(" ", ","))
    return None


@register_model("frankenlm")
class FrankenLM(HFLM):
    """HFLM over a zero-copy frankenmodel: model=<zoo name|.gguf|dir|hub id>, plan=<plan text, ';' for ','>."""

    def __init__(
        self,
        model: str = "smollm2-135m",
        plan: str | None = None,
        plan_file: str | None = None,
        dtype: str = "float32",
        device: str = "cpu",
        **kwargs,
    ) -> None:
        from frankenlm.model.frankenmodel import build_frankenmodel
        from frankenlm.model.loading import load_model

        lm = load_model(str(model), dtype=dtype, device=device)
        p = _plan_from_args(plan, plan_file)
        net = build_frankenmodel(lm.model, p) if p is not None else lm.model
        kwargs.pop("pretrained", None)
        super().__init__(pretrained=net, tokenizer=lm.tokenizer, device=device, **kwargs)
        self.frankenlm_plan = None if p is None else str(p)


def main(argv: list[str] | None = None) -> None:
    """lm-eval's own CLI, with the `frankenlm` model type registered."""
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm_eval", *(sys.argv[1:] if argv is None else argv)]
    cli_evaluate()


if __name__ == "__main__":
    main()
