"""Learned quality raters: LLM rubric labels (``label``), hashed n-gram raters (``rater``), scoring in ``score``."""
