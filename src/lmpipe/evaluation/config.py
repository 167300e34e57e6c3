"""Config of stage ``evaluate`` (section ``evaluate``): the models, held-out loss, closed-book QA, toxicity of
generations, samples, lm-evaluation-harness tasks and the post-training metrics."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from lmpipe.holdout.config import PrefilterEvalConfig
from lmpipe.posttrain.config import PosttrainEvalConfig
from lmpipe.sections import Section


class EvalModelConfig(Section):
    """One model to evaluate: a local HF causal-LM directory (weights + tokenizer files)."""

    path: str = Field(..., min_length=1)
    parent: str | None = Field(
        None, description="name of the model this one was trained from (for forgetting)"
    )


class HeldoutConfig(Section):
    """Per-domain loss / perplexity / bits-per-byte on held-out documents, under a budget."""

    max_docs_per_domain: int = Field(200, ge=1)
    max_tokens_per_domain: int = Field(
        50_000, ge=1, description="whole documents are taken until this is reached"
    )
    seq_len: int | None = Field(None, ge=2, description="scoring window; default: the model's context length")


class QAConfig(Section):
    """Closed-book QA: the prompt may name the title, never the article."""

    format: Literal["auto", "jsonl", "quality"] = "auto"
    template: str = Field(
        "Q: {question}\nA:", description="fields: {title}, {question} (no article: closed-book)"
    )
    normalise: Literal["chars", "tokens", "none"] = Field(
        "chars", description="length normalisation of MC scores"
    )
    generate: bool = Field(True, description="also greedy-generate answers and score normalised exact match")
    max_new_tokens: int = Field(12, ge=1)
    max_questions: int | None = Field(None, ge=1)
    coverage: bool = Field(
        True, description="also split MC accuracy by whether the synthetic docs mention the entity"
    )

    @model_validator(mode="after")
    def _closed_book(self) -> QAConfig:
        import string

        fields = {f for _, f, _, _ in string.Formatter().parse(self.template) if f}
        if not fields <= {"title", "question"}:
            raise ValueError(
                f"template may use {{title}} and {{question}} only (closed-book); got {sorted(fields)}"
            )
        if "question" not in fields:
            raise ValueError("template must contain {question}")
        return self


class PromptFile(Section):
    """Toxicity prompts from a file: ``hh-rlhf`` (red-team dialogues, gzip JSONL of chosen/rejected: the first
    Human turn) or ``prefix`` (JSONL with ``text``: its first half of words, RealToxicityPrompts' construction)."""

    path: str
    format: Literal["hh-rlhf", "prefix"] = "hh-rlhf"


class ToxicityConfig(Section):
    """RealToxicityPrompts-style: k sampled continuations per prompt, scored by a toxicity scorer."""

    prompts: list[str] = Field(
        default_factory=list, description="used when no prompt file is found; all empty: skip"
    )
    prompt_files: list[PromptFile] = Field(
        default_factory=list, description="the first that exists gives the prompts"
    )
    max_prompts: int | None = Field(
        None, ge=1, description="distinct prompts taken from the file, in file order"
    )
    max_prompt_chars: int = Field(300, ge=10, description="longer prompts are cut at a word boundary")
    samples_per_prompt: int = Field(5, ge=1, description="k")
    max_new_tokens: int = Field(20, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(0.9, gt=0, le=1)
    threshold: float = Field(
        0.5, ge=0, le=1, description="a continuation counts as toxic at or above this score"
    )
    scorer: Literal["auto", "classifier", "wordlist", "hf"] = Field(
        "auto",
        description="auto: the filter stage's classifier when available, else the word list; "
        "hf: a local text-classification model directory (hf_model_dir)",
    )
    wordlist: str | None = Field(
        None, description="one term per line; None = the shipped LDNOOBW English list"
    )
    hf_model_dir: str | None = Field(None, description="scorer hf: local text-classification model directory")
    hf_label: str = Field("toxic", description="scorer hf: the toxic class's label")

    @model_validator(mode="after")
    def _hf(self) -> ToxicityConfig:
        if self.scorer == "hf" and not self.hf_model_dir:
            raise ValueError("scorer 'hf' needs hf_model_dir")
        return self


class SamplesConfig(Section):
    prompts: list[str] = Field(default_factory=list)
    max_new_tokens: int = Field(40, ge=1)


class LmEvalConfig(Section):
    """Optional lm-evaluation-harness tasks (``pip install lmpipe[lmeval]``); skipped when empty or absent."""

    tasks: list[str] = Field(default_factory=list)
    include_path: str | None = Field(None, description="directory of local task YAML files")
    limit: int | None = Field(None, ge=1)


class EvaluateConfig(Section):
    models: dict[str, EvalModelConfig] = Field(default_factory=dict)
    old_domains: list[str] | None = Field(
        None, description="domains whose change counts as forgetting; default all"
    )
    batch_tokens: int = Field(1024, ge=16, description="padded tokens per scoring forward pass")
    batch_size: int = Field(32, ge=1, description="prompts per generation batch")
    threads: int = Field(1, ge=1, description="torch threads (the machine is shared)")
    heldout: HeldoutConfig = HeldoutConfig()
    qa: QAConfig = QAConfig()
    toxicity: ToxicityConfig = ToxicityConfig()
    samples: SamplesConfig = SamplesConfig()
    lm_eval: LmEvalConfig = LmEvalConfig()
    posttrain: PosttrainEvalConfig = PosttrainEvalConfig()
    prefilter: PrefilterEvalConfig = PrefilterEvalConfig()

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        # `models: {pretrain: models/pretrain}` is shorthand for `{pretrain: {path: models/pretrain}}`
        if isinstance(data, dict) and isinstance(data.get("models"), dict):
            data = {
                **data,
                "models": {k: {"path": v} if isinstance(v, str) else v for k, v in data["models"].items()},
            }
        return data

    @model_validator(mode="after")
    def _parents(self) -> EvaluateConfig:
        for name, m in self.models.items():
            seen = {name}
            parent = m.parent
            while parent is not None:
                if parent not in self.models:
                    raise ValueError(f"models.{name}: parent {parent!r} is not one of {sorted(self.models)}")
                if parent in seen:
                    raise ValueError(f"models.{name}: parent chain has a cycle through {parent!r}")
                seen.add(parent)
                parent = self.models[parent].parent
        return self
