"""Model evaluation: per-domain bits/byte, closed-book QA, toxicity of generations, forgetting, samples.

Every model (pretrain, continual pretraining, SFT, DPO, or any local Hugging Face causal-LM directory) is
evaluated by the same code so stages compare; see :func:`lmpipe.evaluation.run.evaluate_models`.
"""

from lmpipe.evaluation.forgetting import forgetting
from lmpipe.evaluation.heldout import heldout_metrics
from lmpipe.evaluation.lm import LM, ModelDirError, Span, generate, span_logprobs, windows
from lmpipe.evaluation.qa import QAItem, QASet, load_qa, multiple_choice, normalise_answer
from lmpipe.evaluation.run import evaluate_model, evaluate_models
from lmpipe.evaluation.toxicity import ToxicityScorer, WordListScorer, resolve_scorer, rtp_summary

__all__ = [
    "LM", "ModelDirError", "QAItem", "QASet", "Span", "ToxicityScorer", "WordListScorer", "evaluate_model",
    "evaluate_models", "forgetting", "generate", "heldout_metrics", "load_qa", "multiple_choice",
    "normalise_answer", "resolve_scorer", "rtp_summary", "span_logprobs", "windows",
]
