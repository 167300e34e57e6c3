"""Document quality filtering: measure every document once (``score``), decide per domain later (``select``).

Modules: :mod:`.text` (fast word splitting), :mod:`.gopher`, :mod:`.c4`, :mod:`.fineweb` (published
heuristics as measurements), :mod:`.language`, :mod:`.toxicity`, :mod:`.perplexity`, :mod:`.encoding`,
:mod:`.pii`, :mod:`.decontam`; :mod:`.score` runs them all. Each family module declares its bounds as a
``RULES`` table of :class:`.rules.Rule` (knob, score key, operator) beside its measurement; :mod:`.select`
applies those tables with the thresholds of ``params.yaml`` (``filter.select``) and :mod:`.plots` draws each
score's histogram with the same bounds.
"""
