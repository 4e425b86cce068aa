"""Scoring, the way lm-evaluation-harness scores: tasks turn data into requests, the scorer answers them.

``tasks/`` (benchmarks and corpora as documents of requests, with their metrics and declared direction),
the scorer behind a narrow ``forward(ids, mask) -> logits`` waist (loglikelihood, rolling loglikelihood, greedy
generation), ``batching`` (batch sizes incl. ``auto``), ``stats`` (paired bootstrap, McNemar, permutation,
Holm/BH), ``comparison`` (base vs frankenmodel, behind ``frankenlm eval``) and ``lmeval`` (the lm-eval model
type). Built on ``model``; knows nothing of studies.
"""
