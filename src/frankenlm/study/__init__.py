"""Studies: sweeps over layer plans, resumable, raced, confirmed on held-out items.

``spec`` (study specs and presets, validated when loaded), ``designs`` (named plan generators), ``store``
(SQLite per-item results keyed by everything that determines them), the prefix cache (hidden states before the
first changed layer come from one base pass), units of work and executors (in-process or Ray), racing and the
greedy search as small decision functions, the runner, and ``analysis`` (typed result rows: every verdict is
computed here once). Built on ``model`` and ``eval``; draws nothing (progress goes through callbacks).
"""
