"""Models and plans: where frankenmodels come from and what they are.

``zoo`` (the offline pretrained models) and ``loading`` (any source → a loaded model with its digest), ``arch``
(every per-family fact: layer paths, branch names, where a branch scale goes), ``plan`` (the canonical
`LayerPlan` and its text form), ``frankenmodel`` (zero-copy models whose positions share the sources' tensors),
``costs`` (parameters, FLOPs and KV bytes of a plan) and ``generation`` (cached greedy decoding).
Imports nothing of frankenlm but ``errors``.
"""
