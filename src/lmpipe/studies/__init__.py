"""Studies: controlled comparisons (arms × seeds) run as DVC experiments, with intervals and claim verdicts.

``spec`` (the study file and its validation), ``stats`` (intervals, paired differences, verdicts),
``experiments`` (the DVC side), ``runner`` (plan / execute / analyse) and ``report`` (JSON + HTML).
"""
