"""Document quality filtering: measure every document once (``score``), decide per domain later (``select``).

Modules: :mod:`.text` (fast word splitting), :mod:`.gopher`, :mod:`.c4`, :mod:`.fineweb` (published
heuristics as measurements), :mod:`.language`, :mod:`.toxicity`, :mod:`.perplexity`, :mod:`.encoding`,
:mod:`.pii`, :mod:`.decontam`; :mod:`.score` runs them all, :mod:`.select` applies the thresholds of
``params.yaml`` (``filter.select``) and :mod:`.plots` draws each score's histogram with its thresholds.
"""
