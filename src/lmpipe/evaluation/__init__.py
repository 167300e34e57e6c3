"""Model evaluation: per-domain bits/byte, closed-book QA, toxicity of generations, forgetting, samples.

Every model (pretrain, continual pretraining, SFT, DPO, or any local Hugging Face causal-LM directory) is
evaluated by the same code so stages compare; see :func:`lmpipe.evaluation.run.evaluate_models`. Modules:
``lm`` (scoring and generation), ``heldout``, ``qa``, ``toxicity``, ``forgetting``, ``harness``, ``run`` (the
stage), ``config`` (section ``evaluate``). Nothing is imported here, so ``lmpipe.config`` stays cheap to import.
"""
