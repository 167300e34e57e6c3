"""Post-training knobs (stages ``sft``, ``dpo``, ``rlvr``, ``residual``): one ``posttrain`` section of params.yaml.

Each stage reads ``posttrain.data`` (what it trains on, how records are checked and decontaminated) and its own
sub-section. Step counts are CPU-sized for ``make run``; raise them on real hardware.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lmpipe.sections import Section

InstructFormat = Literal["messages", "alpaca", "alpaca_seed", "hh_rlhf", "pairs", "prompts"]


class InstructSource(Section):
    """One instruction / preference / prompt file.

    Formats: ``messages`` (chat JSONL ``{"messages": [{role, content}, ...]}``), ``alpaca``
    (``instruction``/``input``/``output``, JSON array or JSONL), ``alpaca_seed`` (``instruction`` +
    ``instances[{input, output}]``), ``hh_rlhf`` (``chosen``/``rejected`` "Human:/Assistant:" transcripts,
    ``.gz`` ok), ``pairs`` (``{messages (prompt), chosen, rejected}``), ``prompts`` (``{messages, answer, kind}``
    with ``kind`` ``math`` | ``qa`` | ``format``: verifiable prompts for on-policy pairs and RLVR).
    """

    path: str = Field(..., min_length=1)
    format: InstructFormat = "messages"
    max_records: int | None = Field(None, ge=1, description="read at most this many records (in file order)")


class EvalSet(Section):
    """An evaluation set every post-training set is decontaminated against (n-gram overlap)."""

    path: str = Field(..., min_length=1)
    id_field: str = "id"
    text_fields: list[str] = Field(default_factory=lambda: ["question", "answer"], min_length=1)


class PosttrainDataConfig(Section):
    sft: list[InstructSource] = Field(
        default_factory=lambda: [InstructSource(path="data/raw/instruct/sft.jsonl", format="messages")]
    )
    preference: list[InstructSource] = Field(
        default_factory=list,
        description="fixed preference pairs (hh_rlhf | pairs); empty: pairs come from prompts",
    )
    prompts: list[InstructSource] = Field(
        default_factory=lambda: [InstructSource(path="data/raw/instruct/prompts.jsonl", format="prompts")]
    )
    eval_sets: list[EvalSet] = Field(
        default_factory=lambda: [
            EvalSet(path="data/eval/fiction_qa.jsonl"),
            EvalSet(path="data/eval/math_heldout.jsonl"),
            EvalSet(path="data/eval/pref_heldout.jsonl", text_fields=["question", "chosen"]),
        ]
    )
    ngram: int = Field(13, ge=1, description="shared word n-gram length that marks a record contaminated")
    min_ngram: int = Field(8, ge=1, description="shorter eval items are matched whole from this many words")
    max_length: int = Field(256, ge=16, description="tokens after templating; longer records are quarantined")


class InstructDemoConfig(Section):
    """Instruction data the ``demo`` stage generates (disjoint from the evaluation questions by entity + template)."""

    heldout_entity_fraction: float = Field(
        0.3, gt=0, lt=1, description="entities whose questions are eval-only"
    )
    math_train: int = Field(300, ge=0)
    math_heldout: int = Field(60, ge=1)
    format_prompts: int = Field(80, ge=0, description="format-following instructions (upper case, lists...)")


class TrainLoopConfig(Section):
    """What every post-training stage passes to its HF/TRL Trainer."""

    max_steps: int = Field(40, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(2, ge=0)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    save_steps: int = Field(20, ge=1, description="checkpoint every N steps (kill -9 resumes from the last)")
    logging_steps: int = Field(1, ge=1)
    seed: int | None = Field(None, ge=0, description="None = run.seed")
    threads: int = Field(1, ge=1, description="torch threads (the machine is shared)")


class SftConfig(Section):
    init_from: str = Field("models/cpt", description="HF model dir to fine-tune (the run's cpt model)")
    train: TrainLoopConfig = TrainLoopConfig()
    packing: bool = Field(True, description="BFD packing, padding-free; attention never crosses examples")
    chat_template: Literal["chatml"] = Field(
        "chatml", description="template (+ special tokens) given to a tokenizer without one; kept otherwise"
    )


class DpoConfig(Section):
    init_from: str = Field("models/sft", description="policy and reference (frozen copy) start here")
    train: TrainLoopConfig = TrainLoopConfig(max_steps=30, lr=5e-4, batch_size=8)
    loss_type: Literal["sigmoid", "ipo", "simpo"] = Field(
        "sigmoid",
        description="sigmoid = DPO, ipo = IPO (TRL DPOTrainer); simpo = reference-free (TRL CPOTrainer)",
    )
    beta: float = Field(0.1, gt=0)
    simpo_gamma: float = Field(0.5, ge=0, description="SimPO target margin γ (as in TRL: gamma = γ/β)")
    pairs: Literal["on_policy", "off_policy"] = Field(
        "on_policy", description="on_policy: k SFT samples per prompt, best vs worst by the verifiable reward"
    )
    samples_per_prompt: int = Field(4, ge=2, description="k")
    temperature: float = Field(1.0, gt=0)
    max_new_tokens: int = Field(24, ge=1)
    max_prompts: int = Field(96, ge=1)
    ln2_patience: int = Field(8, ge=1, description="fail if the loss is still ln 2 after this many steps")
    ln2_tol: float = Field(1e-4, gt=0)


class RlvrConfig(Section):
    init_from: str = Field("models/dpo", description="policy to improve (and the KL reference)")
    train: TrainLoopConfig = TrainLoopConfig(max_steps=8, lr=5e-4, batch_size=8)
    num_generations: int = Field(4, ge=2, description="GRPO group size")
    beta: float = Field(0.04, ge=0, description="KL coefficient (0 = no reference model)")
    max_new_tokens: int = Field(24, ge=1)
    temperature: float = Field(1.0, gt=0)
    max_prompts: int = Field(64, ge=1)


class ResidualConfig(Section):
    """θ_target + s·(θ_instruct − θ_base) (Balancing CPT & IFT): an instruction residual moved onto another base.

    The paper's set-up, in this run's models: ``base`` = pretrain, the model both others grew from; ``instruct`` =
    SFT of that base (stage ``sft_base``: the ``sft`` recipe on ``base``); ``target`` = cpt, the continually
    pretrained base. The result is an instruct model of the cpt checkpoint without SFT on it; ``evaluate`` puts it
    beside ``sft`` (SFT run on cpt directly). Point ``instruct``/``base`` at other dirs (e.g. an instruct model and
    its own base) and ``sft_base`` leaves the graph (``python -m stages.registry --write``).
    """

    target: str = Field("models/cpt", description="the model that receives the residual")
    instruct: str = Field("models/sft_base", description="instruct model of `base` (default: stage sft_base)")
    base: str = Field("models/pretrain", description="the model `instruct` was tuned from")
    scale: float = Field(1.0, description="multiplies the residual")


class PosttrainConfig(Section):
    data: PosttrainDataConfig = PosttrainDataConfig()
    sft: SftConfig = SftConfig()
    dpo: DpoConfig = DpoConfig()
    rlvr: RlvrConfig = RlvrConfig()
    residual: ResidualConfig = ResidualConfig()

    @model_validator(mode="after")
    def _lengths(self) -> PosttrainConfig:
        if self.data.min_ngram > self.data.ngram:
            raise ValueError(
                f"data.min_ngram ({self.data.min_ngram}) must not exceed data.ngram ({self.data.ngram})"
            )
        return self


class PosttrainEvalConfig(Section):
    """What ``evaluate`` measures on every model for post-training (section ``evaluate.posttrain``); nothing when no
    set is named.

    Chat models are prompted through their chat template, others with ``Question: ...\\nAnswer:``, so base → cpt →
    sft → dpo → rlvr line up on the same held-out items.
    """

    qa: str | None = Field(None, description="held-out fictional questions {question, answer} (exact match)")
    math: list[str] = Field(
        default_factory=list,
        description="JSONL {question, answer}; a GSM8K file works as is (answer ending '#### n')",
    )
    pairs: str | None = Field(None, description="held-out preference pairs {question, chosen, rejected}")
    max_items: int | None = Field(60, ge=1, description="per set")
    max_new_tokens: int = Field(24, ge=1)
    samples: int = Field(4, ge=0, description="sample answers per set and model kept for the report")

    @property
    def enabled(self) -> bool:
        return bool(self.qa or self.math or self.pairs)
