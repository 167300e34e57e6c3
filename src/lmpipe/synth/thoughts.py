"""Thought augmentation.

TPT ("Thinking Augmented Pre-training"): the model writes a step-by-step thinking trajectory that explains
a document, and the trajectory is appended to it. BoLT ("Reasoning to Learn from Latent Thoughts"): the
model infers the latent thoughts behind a document, placed before it so a model trained on the result
learns to reason its way to the text. The layout is a params string with ``{document}`` and ``{thought}``.
"""

from __future__ import annotations

from lmpipe.synth.config import ThoughtsConfig
from lmpipe.synth.prompts import fill

DEFAULT_FORMAT = {
    "tpt": "{document}\n\n<think>\n{thought}\n</think>",
    "bolt": "<think>\n{thought}\n</think>\n\n{document}",
}
TEMPLATE = {"tpt": "thought_tpt", "bolt": "thought_bolt"}


def render(document: str, thought: str, cfg: ThoughtsConfig) -> str:
    return fill(cfg.format or DEFAULT_FORMAT[cfg.mode], document=document, thought=thought)
