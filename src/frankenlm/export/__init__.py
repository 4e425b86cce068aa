"""Exports of a frankenmodel: a plain Hugging Face directory, a mergekit passthrough YAML, or a GGUF file.

* `materialize` (materialize.py) turns a plan into an ordinary transformers model with its own weight copies;
  `export_hf` (hf.py) saves it with the tokenizer and a ``frankenlm.json`` provenance note.
* `export_mergekit` / `to_mergekit` / `from_mergekit` (mergekit.py): mergekit ``passthrough`` YAML.
* `export_gguf` (gguf.py) rewrites GGUF sources, copying tensor bytes without requantizing.
* files.py: no export overwrites anything without ``force`` or leaves a half-written file behind;
  scaling.py: where a position's branch scales land in the weights.
"""

from frankenlm.export.gguf import export_gguf, gemma3_gguf_layer_type
from frankenlm.export.hf import export_hf
from frankenlm.export.materialize import materialize
from frankenlm.export.mergekit import export_mergekit, from_mergekit, read_mergekit, to_mergekit

__all__ = [
    "export_gguf",
    "export_hf",
    "export_mergekit",
    "from_mergekit",
    "gemma3_gguf_layer_type",
    "materialize",
    "read_mergekit",
    "to_mergekit",
]
