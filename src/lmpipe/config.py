"""Typed view of ``params.yaml``: every section's schema and defaults, and ``Params`` assembling them.

Every section is a pydantic model with ``extra="forbid"`` so a typo fails fast. Errors name the YAML path
(``ingest.sources[1].format``), what was wrong, and where applicable the allowed values. The stages that read
a section declare it as their DVC params (``stages/registry.py``), and this module is in every stage's code
deps, so a changed default reruns what it touches.

Why one module of ~850 lines (the house rule is ~400): sections for new components (``posttrain``, ``web``)
live beside them, but the older ones are still here, because several package ``__init__``s import their
stage code, which imports this module; moving those sections beside their components needs light package
``__init__``s first (planned). Banners group each component's classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lmpipe.conditioning.config import ConditionConfig
from lmpipe.holdout.config import HoldoutConfig, PrefilterEvalConfig
from lmpipe.mixing.config import CmrConfig, ParetoConfig, ReweightConfig
from lmpipe.posttrain.config import InstructDemoConfig, PosttrainConfig, PosttrainEvalConfig
from lmpipe.quality.config import QualityConfig, QualityRules, QualityScoreConfig
from lmpipe.refine.config import RefineConfig
from lmpipe.sections import Section
from lmpipe.web.config import WebConfig

DEFAULT_PARAMS = Path("params.yaml")


# --------------------------------------------------------------------------------------------- run
class ExecutorConfig(Section):
    """Where shard-parallel data work runs. Results never depend on this choice."""

    kind: Literal["local", "dask", "ray"] = "local"
    workers: int = Field(2, ge=1, le=4096, description="processes (local) or workers (dask LocalCluster)")
    address: str | None = Field(None, description="dask scheduler 'tcp://host:8786' or ray 'ray://host:10001'")


class RunConfig(Section):
    seed: int = Field(1234, ge=0)
    executor: ExecutorConfig = ExecutorConfig()


# -------------------------------------------------------------------------------------------- demo
class DemoConfig(Section):
    """Size of the generated demo corpus (deterministic given ``run.seed``)."""

    prose_docs: int = Field(400, ge=0, description="English prose: docstrings of the Python standard library")
    code_docs: int = Field(300, ge=0, description="Python standard library source, split at top-level defs")
    math_docs: int = Field(600, ge=0, description="generated word problems with worked answers")
    fiction_entities: int = Field(40, ge=1, description="invented organisations, each with an article + QA")
    noise_fraction: float = Field(0.08, ge=0.0, le=0.9, description="share of extra noisy docs")
    toxicity_examples: int = Field(600, ge=0, description="labelled pairs for the toxicity classifier")
    web_pages: int = Field(30, ge=0, description="HTML articles in the demo crawl (data/raw/crawl/*.warc.gz)")
    min_doc_chars: int = Field(200, ge=1)
    max_doc_chars: int = Field(6000, ge=100)
    instruct: InstructDemoConfig = InstructDemoConfig()


# ------------------------------------------------------------------------------------------ ingest
TextSplit = Literal["file", "paragraph", "line", "heading"]
Format = Literal["auto", "txt", "jsonl", "parquet", "hf_disk", "hf_hub", "warc", "wet", "html"]


class SourceConfig(Section):
    """One input: local path/glob, ``s3://bucket/prefix/*.jsonl``, or a Hugging Face dataset."""

    uri: str = Field(..., min_length=1)
    domain: str = Field(..., pattern=r"^[a-z][a-z0-9_]*$")
    format: Format = "auto"
    text_field: str = "text"
    split: TextSplit = Field("file", description="how a .txt file becomes documents")
    hf_split: str = "train"
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, moto, Ceph)")


# a charset-normalizer guess is kept only at confidence = 1 - chaos >= this; the detector itself drops
# candidates above chaos 0.2 (its default), so 0.8 accepts any guess it offers (see lmpipe.decoding)
MIN_ENCODING_CONFIDENCE = 0.8


class IngestConfig(Section):
    sources: list[SourceConfig] = Field(default_factory=list, min_length=1)
    docs_per_shard: int = Field(5000, ge=1)
    group_mib: int = Field(64, ge=1, description="small input files are read together up to this size")
    min_chars: int = Field(1, ge=0, description="shorter documents are quarantined as 'empty'")
    max_chars: int = Field(1_000_000, ge=1, description="longer documents are quarantined as 'oversize'")
    surrogates: Literal["replace", "quarantine"] = Field(
        "replace", description="JSON strings escaping half a UTF-16 pair ('\\ud800'): U+FFFD, or 'lone_surrogate'")
    min_encoding_confidence: float = Field(
        MIN_ENCODING_CONFIDENCE, ge=0.0, le=1.0, description="a detected (non-UTF-8, no BOM) encoding below this is 'undecodable'")
    web: WebConfig = WebConfig()
    holdout: HoldoutConfig = HoldoutConfig()

    @model_validator(mode="after")
    def _bounds(self) -> IngestConfig:
        if self.min_chars >= self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) must be below max_chars ({self.max_chars})")
        return self


# ------------------------------------------------------------------------------------------- dedup
class NormalizeConfig(Section):
    """How text is normalised before exact hashing and shingling (steps in ``lmpipe.dedup.exact``)."""

    unicode_nfkc: bool = True
    lowercase: bool = True
    strip_punctuation: bool = Field(True, description="punctuation/symbols become spaces")
    strip_digits: bool = Field(False, description="off: problems differing only in numbers are distinct")


class DedupConfig(Section):
    """Exact (normalised hash) + near (MinHash LSH) dedup; one document kept per duplicate cluster."""

    normalize: NormalizeConfig = NormalizeConfig()
    exact: bool = True
    near: bool = True
    shingle_size: int = Field(5, ge=1, le=32, description="words per shingle")
    bands: int = Field(14, ge=1, le=512)
    rows: int = Field(8, ge=1, le=64, description="signature values per band; num_perm = bands * rows")
    seed: int = Field(1, ge=0, description="draws the MinHash permutations")
    verify: Literal["none", "signature", "exact"] = Field(
        "signature", description="check LSH candidates: estimated (signature) or exact shingle Jaccard")
    threshold: float = Field(0.7, ge=0.0, le=1.0, description="minimum Jaccard of a verified candidate pair")
    keep: Literal["first", "longest"] = Field("first", description="survivor of a cluster (ties: first)")
    batch_docs: int = Field(1000, ge=1, description="documents hashed per vectorised batch")
    chunk_shingles: int = Field(4096, ge=64, description="shingles per permutation block (fits in cache)")
    bucket_mib: int = Field(256, ge=1, description="memory for one band's buckets in the cluster pass")
    docs_per_shard: int = Field(5000, ge=1)

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows


# ------------------------------------------------------------------------------------------- gates
DropBounds = tuple[float, float]


class StageGateConfig(Section):
    """Expectations for one data stage's output (and the stage's drop statistics)."""

    min_docs: int = Field(1, ge=0)
    min_chars: int = Field(1, ge=0, description="every kept text has at least this many characters")
    max_chars: int = Field(1_000_000, ge=1)
    domains: list[str] | None = Field(None, description="allowed domains; None = gates.domains")
    drop_bounds: dict[str, DropBounds] = Field(
        default_factory=dict, description="reason -> [min, max] fraction of the stage's input it may drop")
    max_drop_fraction: float = Field(1.0, ge=0.0, le=1.0, description="bound for reasons not in drop_bounds")

    @model_validator(mode="after")
    def _check(self) -> StageGateConfig:
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) must not exceed max_chars ({self.max_chars})")
        for reason, (lo, hi) in self.drop_bounds.items():
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(f"drop_bounds.{reason}: need 0 <= min <= max <= 1, got [{lo}, {hi}]")
        return self


class GatesConfig(Section):
    """great-expectations gates after each data stage; a failed gate fails the stage."""

    enabled: bool = True
    sample_docs: int = Field(5000, ge=1, description="rows validated in full (all columns); stats stream over all")
    domains: list[str] = Field(default_factory=lambda: ["prose", "code", "math", "fiction", "web"])
    stages: dict[str, StageGateConfig] = Field(default_factory=dict)

    def for_stage(self, stage: str) -> StageGateConfig:
        return self.stages.get(stage, StageGateConfig())


# ---------------------------------------------------------------------------------------- tokenize
class TokenizeConfig(Section):
    """Byte-level BPE training (or a reused local HF tokenizer) and packing into per-domain token files."""

    tokenizer_path: str | None = Field(None, description="reuse this local HF tokenizer dir instead of training")
    vocab_size: int = Field(8192, ge=300, le=1 << 20, description="target vocab (incl. special tokens)")
    min_frequency: int = Field(2, ge=1, description="BPE merges need a pair seen at least this often")
    train_max_mib: float = Field(
        256, gt=0, description="train the tokenizer on a deterministic id-hash sample of about this much text"
    )
    eos_token: str = Field("<|endoftext|>", min_length=1, description="appended after every document")
    pad_token: str | None = "<|pad|>"
    extra_special_tokens: list[str] = Field(default_factory=list)
    val_fraction: float = Field(0.05, ge=0.0, lt=1.0, description="held-out share, by a hash of the doc id")
    batch_docs: int = Field(512, ge=1, description="documents per encode_batch call")
    encode_threads: int = Field(
        1, ge=0, description="threads inside each encode_batch (0 = all cores); processes come from run.executor"
    )
    heldout_docs_per_shard: int = Field(5000, ge=1)

    @model_validator(mode="after")
    def _specials(self) -> TokenizeConfig:
        specials = [self.eos_token, *([self.pad_token] if self.pad_token else []), *self.extra_special_tokens]
        if len(set(specials)) != len(specials):
            raise ValueError(f"special tokens must be distinct; got {specials}")
        return self


# ----------------------------------------------------------------------------------------- mixture
class MixtureConfig(Section):
    """Domain weights of the training mixture (normalised at use; zero drops a domain)."""

    weights: dict[str, float] = Field(default_factory=lambda: {"prose": 0.3, "code": 0.2, "math": 0.2, "fiction": 0.3})
    missing: Literal["error", "ignore"] = Field(
        "error", description="a weighted domain absent from the token index: fail, or drop it"
    )
    from_tune: bool = Field(
        False, description="train `pretrain` on the tune stage's winner (data/tune/best_mixture.yaml): its weights "
        "replace `weights` (pretrain always depends on that file; with the flag off it is not read)",
    )
    sampler: Literal["weighted", "rs2"] = Field(
        "weighted", description="weighted: draw domains by `weights`; rs2: the RS2 baseline (every window of the "
        "weighted domains pooled, a fresh random order each epoch, no repeats within one)")
    reweight: ReweightConfig = ReweightConfig()

    @model_validator(mode="after")
    def _rs2(self) -> MixtureConfig:
        if self.sampler == "rs2" and self.reweight.enabled:
            raise ValueError("reweight needs sampler: weighted (RS2 has no domain weights to update)")
        return self

    @model_validator(mode="after")
    def _weights(self) -> MixtureConfig:
        bad = {k: v for k, v in self.weights.items() if not v >= 0}
        if bad:
            raise ValueError(f"weights must be non-negative; got {bad}")
        if not self.weights or sum(self.weights.values()) <= 0:
            raise ValueError("at least one domain needs a positive weight")
        return self


# ---------------------------------------------------------------------------------------- evaluate
class EvalModelConfig(Section):
    """One model to evaluate: a local HF causal-LM directory (weights + tokenizer files)."""

    path: str = Field(..., min_length=1)
    parent: str | None = Field(None, description="name of the model this one was trained from (for forgetting)")


class HeldoutConfig(Section):
    """Per-domain loss / perplexity / bits-per-byte on held-out documents, under a budget."""

    max_docs_per_domain: int = Field(200, ge=1)
    max_tokens_per_domain: int = Field(50_000, ge=1, description="whole documents are taken until this is reached")
    seq_len: int | None = Field(None, ge=2, description="scoring window; default: the model's context length")


class QAConfig(Section):
    """Closed-book QA: the prompt may name the title, never the article."""

    format: Literal["auto", "jsonl", "quality"] = "auto"
    template: str = Field("Q: {question}\nA:", description="fields: {title}, {question} (no article: closed-book)")
    normalise: Literal["chars", "tokens", "none"] = Field("chars", description="length normalisation of MC scores")
    generate: bool = Field(True, description="also greedy-generate answers and score normalised exact match")
    max_new_tokens: int = Field(12, ge=1)
    max_questions: int | None = Field(None, ge=1)
    coverage: bool = Field(True, description="also split MC accuracy by whether the synthetic docs mention the entity")

    @model_validator(mode="after")
    def _closed_book(self) -> QAConfig:
        import string

        fields = {f for _, f, _, _ in string.Formatter().parse(self.template) if f}
        if not fields <= {"title", "question"}:
            raise ValueError(f"template may use {{title}} and {{question}} only (closed-book); got {sorted(fields)}")
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

    prompts: list[str] = Field(default_factory=list, description="used when no prompt file is found; all empty: skip")
    prompt_files: list[PromptFile] = Field(default_factory=list, description="the first that exists gives the prompts")
    max_prompts: int | None = Field(None, ge=1, description="distinct prompts taken from the file, in file order")
    max_prompt_chars: int = Field(300, ge=10, description="longer prompts are cut at a word boundary")
    samples_per_prompt: int = Field(5, ge=1, description="k")
    max_new_tokens: int = Field(20, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(0.9, gt=0, le=1)
    threshold: float = Field(0.5, ge=0, le=1, description="a continuation counts as toxic at or above this score")
    scorer: Literal["auto", "classifier", "wordlist", "hf"] = Field(
        "auto", description="auto: the filter stage's classifier when available, else the word list; "
        "hf: a local text-classification model directory (hf_model_dir)"
    )
    wordlist: str | None = Field(None, description="one term per line; None = the shipped LDNOOBW English list")
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
    old_domains: list[str] | None = Field(None, description="domains whose change counts as forgetting; default all")
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
            data = {**data, "models": {k: {"path": v} if isinstance(v, str) else v for k, v in data["models"].items()}}
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


# ------------------------------------------------------------------------------------------ report
class ReportConfig(Section):
    title: str = "lmpipe run report"
    dvclive_glob: str = Field("dvclive/*/plots/metrics", description="DVCLive metric folders, one per training stage")
    funnel_stages: list[str] = Field(
        default_factory=lambda: ["ingest", "filter", "dedup", "augment"], description="metrics/<stage>.json in order"
    )
    max_samples: int = Field(40, ge=0, description="sample generations shown per model")


# ------------------------------------------------------------------------------------- model/train
class ModelConfig(Section):
    """A Hugging Face causal LM built from scratch (ignored when ``init_from`` names a model dir)."""

    arch: Literal["llama", "mistral", "qwen2"] = Field(
        "llama", description="HF model_type; all are pre-norm RMSNorm + RoPE + SwiGLU decoders"
    )
    d_model: int = Field(128, ge=8)
    n_layers: int = Field(4, ge=1)
    n_heads: int = Field(4, ge=1)
    n_kv_heads: int | None = Field(None, ge=1, description="fewer than n_heads = grouped-query attention")
    d_ff: int | None = Field(None, ge=1, description="SwiGLU width; default 8/3·d_model rounded up to ffn_multiple")
    ffn_multiple: int = Field(32, ge=1)
    max_seq_len: int = Field(256, ge=2, description="RoPE context length written to the HF config")
    rope_theta: float = Field(10_000.0, gt=0)
    norm_eps: float = Field(1e-5, gt=0)
    tie_embeddings: bool = True
    init_std: float = Field(0.02, gt=0)
    vocab_multiple: int = Field(64, ge=1, description="pad the vocab (tokenizer's) up to a multiple: faster matmuls")
    attn_impl: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"

    @model_validator(mode="after")
    def _heads(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.n_kv_heads is not None and self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.n_kv_heads})")
        return self


class ScheduleConfig(Section):
    """LR multiplier as a closed-form function of the optimizer step (src/lmpipe/schedules.py).

    Continual pretraining reuses it: re-warm with ``start_ratio`` > 0 (begin at the previous run's final LR) and
    re-decay with cosine/wsd, or continue an ``infinite`` run at its constant LR (warmup_steps = cooldown_steps = 0).
    """

    kind: Literal["cosine", "wsd", "constant", "infinite"] = "cosine"
    warmup_steps: int = Field(20, ge=0, description="linear warmup from start_ratio·lr to lr")
    start_ratio: float = Field(0.0, ge=0, le=1, description="LR at step 0 as a fraction of lr (re-warming)")
    min_ratio: float = Field(0.1, ge=0, le=1, description="final LR as a fraction of lr")
    decay_fraction: float = Field(0.2, gt=0, le=1, description="wsd: decay phase; infinite: anneal phase (of steps)")
    decay_shape: Literal["linear", "cosine", "1-sqrt"] = Field("1-sqrt", description="wsd decay curve")
    cooldown_steps: int = Field(0, ge=0, description="infinite: cosine cooldown from lr to const_ratio·lr")
    const_ratio: float = Field(0.5, gt=0, le=1, description="infinite: LR of the long constant phase, fraction of lr")

    @model_validator(mode="after")
    def _ratios(self) -> ScheduleConfig:
        if self.kind == "infinite" and self.min_ratio > self.const_ratio:
            raise ValueError(f"min_ratio ({self.min_ratio}) must not exceed const_ratio ({self.const_ratio})")
        return self


class TrainConfig(Section):
    """One training run (pretraining, or continual pretraining from ``init_from``) with Lightning."""

    init_from: str | None = Field(None, description="local HF model dir to start from; None = new model from `model`")
    seed: int | None = Field(None, ge=0, description="None = run.seed")
    seq_len: int = Field(256, ge=2)
    batch_size: int = Field(8, ge=1, description="sequences per device per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    max_steps: int = Field(120, ge=1, description="optimizer steps")
    lr: float = Field(3e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.1, ge=0, description="AdamW; not applied to norms and biases")
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0)
    grad_clip: float = Field(1.0, ge=0, description="max global grad norm; 0 = off")
    schedule: ScheduleConfig = ScheduleConfig()
    val_every: int = Field(50, ge=1, description="optimizer steps between validations")
    val_batches: int = Field(4, ge=1, description="fixed held-out batches per validation")
    ckpt_every: int = Field(50, ge=1, description="optimizer steps between resumable checkpoints")
    val_domain_batches: int = Field(
        1, ge=0, description="fixed held-out batches per domain, validated every val_every steps (0 = off)"
    )
    keep_steps: list[int] = Field(
        default_factory=list, description="optimizer steps whose model is kept as an HF dir in <ckpt>/steps"
    )
    log_every: int = Field(1, ge=1)
    accelerator: Literal["cpu", "gpu", "cuda", "mps", "tpu", "auto"] = "cpu"
    devices: int | Literal["auto"] = Field(1, description="devices per node")
    num_nodes: int = Field(1, ge=1)
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    precision: Literal["32-true", "bf16-mixed", "16-mixed", "bf16-true"] = "32-true"
    compile: bool = Field(False, description="torch.compile the model")
    threads: int = Field(1, ge=0, description="torch intra-op threads; 0 = torch's default (one per core)")
    peak_tflops: float | None = Field(None, gt=0, description="per-device peak for MFU; None = known GPU or measured")

    @model_validator(mode="after")
    def _keep_steps(self) -> TrainConfig:
        outside = [s for s in self.keep_steps if not 1 <= s <= self.max_steps]
        if outside:
            raise ValueError(f"keep_steps {outside} outside 1..max_steps ({self.max_steps})")
        return self


# --------------------------------------------------------------------------------------------- cpt
def _cpt_train() -> TrainConfig:
    # continue from the pretrained model: re-warm from its final LR (3e-3 * 0.1) up to a lower peak, re-decay
    return TrainConfig(init_from="models/pretrain", lr=1e-3, max_steps=80,
                       schedule=ScheduleConfig(kind="cosine", warmup_steps=10, start_ratio=0.3, min_ratio=0.1))


class CptConfig(Section):
    """Continual pretraining (stages ``cpt_tokenize`` + ``cpt``): the synthetic domain, tokenized with the base
    tokenizer, mixed with replay of the original domains (``data/tokens``), starting from ``train.init_from``."""

    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="synthetic docs held out (by id hash) for validation")
    train: TrainConfig = Field(default_factory=_cpt_train)
    mixture: MixtureConfig = Field(
        default_factory=lambda: MixtureConfig(
            weights={"synthetic": 0.5, "prose": 0.15, "code": 0.1, "math": 0.1, "fiction": 0.15}
        )
    )
    replay_from_cmr: bool = Field(
        False, description="replay share from the cmr stage's critical ratio (data/cmr/replay.yaml): old domains "
        "keep their relative weights and sum to it (cpt always depends on that file; with the flag off it is not read)")

    @model_validator(mode="after")
    def _parent(self) -> CptConfig:
        if not self.train.init_from:
            raise ValueError("train.init_from must name the parent model dir (continual pretraining starts from it)")
        return self


# --------------------------------------------------------------------------------------------- llm
class LLMConfig(Section):
    """Which LLM the synthetic-data stages call, and how. Read by ``augment`` and ``lmpipe serve-llm``."""

    backend: Literal["embedded", "http"] = Field("embedded", description="in-process model, or an OpenAI-compatible server")
    model: str = Field("smollm2", min_length=1, description="embedded: 'smollm2', a local HF model dir or .gguf file; http: the served model name")
    gguf_file: str | None = Field(None, description="GGUF file inside an embedded model dir")
    threads: int = Field(2, ge=1, le=256, description="torch threads for the embedded model")
    batch_size: int = Field(8, ge=1, le=1024, description="sequences generated together by the embedded model")
    base_url: str = Field("http://127.0.0.1:8000/v1", description="http: server root up to /v1")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="http: env var holding the API key (never put keys in params)")
    concurrency: int = Field(8, ge=1, le=4096, description="http: requests in flight")
    requests_per_second: float = Field(0.0, ge=0, description="http: token-bucket rate limit; 0 = none")
    burst: int = Field(8, ge=1, description="http: token-bucket capacity")
    max_retries: int = Field(4, ge=0, le=20, description="http: retries after the first attempt")
    backoff_base_s: float = Field(0.5, gt=0, description="http: first retry delay (doubles each retry, jittered)")
    backoff_max_s: float = Field(30.0, gt=0)
    retry_after_max_s: float = Field(120.0, gt=0, description="http: cap on a server's Retry-After")
    timeout_s: float = Field(120.0, gt=0, description="http: per-attempt timeout")
    cache: str | None = Field("data/.cache/llm.sqlite", description="persistent response cache; null = off")


class SelectConfig(Section):
    """Which input documents a synthesis method augments: by domain and/or a numeric score in ``meta``."""

    domains: list[str] = Field(default_factory=lambda: ["fiction"], description="empty = every domain")
    score_field: str | None = Field(None, description="meta key holding a score, e.g. a difficulty or quality score")
    min_score: float | None = None
    max_score: float | None = None
    max_docs: int | None = Field(None, ge=0, description="first N selected documents in dataset order; null = all")


class EntiGraphConfig(Section):
    """EntiGraph: entities per document, then texts relating sampled entity pairs and triples."""

    enabled: bool = True
    mode: Literal["entigraph", "rephrase", "raw"] = Field(
        "entigraph",
        description="what the selected docs become: EntiGraph relation texts; 'rephrase': `rephrases` LLM "
        "paraphrases of each doc (the EntiGraph paper's Rephrase baseline); 'raw': the doc itself, copied to the "
        "synthetic domain (raw-document CPT)",
    )
    rephrases: int = Field(2, ge=1, description="rephrase mode: paraphrases per document")
    rephrase_tokens: int = Field(256, ge=8, description="rephrase mode: max tokens per paraphrase")
    select: SelectConfig = SelectConfig()
    doc_chars: int = Field(1500, ge=100, description="document prefix shown to the model")
    max_entities: int = Field(8, ge=2)
    entity_tokens: int = Field(96, ge=8, description="max tokens for the entity/summary JSON")
    json_attempts: int = Field(2, ge=1, le=10, description="tries for parseable JSON before the heuristic extractor")
    json_mode: Literal["schema", "object", "off"] = Field(
        "schema",
        description="how the entity step asks for JSON: 'schema' (entities + summary: constrained decoding on "
        "the embedded model and serve-llm, structured outputs on OpenAI/vLLM), 'object' (any JSON object), "
        "'off' (the prompt alone, for servers without JSON mode)",
    )
    pairs: int = Field(2, ge=0, description="entity pairs per document")
    triples: int = Field(1, ge=0, description="entity triples per document")
    max_tokens: int = Field(96, ge=8, description="max tokens per relation text")
    doc_token_budget: int = Field(300, ge=8, description="max generated tokens per document over all its relation texts")


class ThoughtsConfig(Section):
    """Thought augmentation: a thinking trajectory per document (TPT), or inferred latent thoughts (BoLT)."""

    enabled: bool = True
    mode: Literal["tpt", "bolt"] = Field("tpt", description="tpt: thought appended after the doc; bolt: latent thought before it")
    select: SelectConfig = SelectConfig()
    doc_chars: int = Field(1500, ge=100)
    max_tokens: int = Field(128, ge=8)
    format: str | None = Field(None, description="output layout with {document} and {thought}; null = the mode's default")

    @model_validator(mode="after")
    def _format(self) -> ThoughtsConfig:
        if self.format is not None and not all(k in self.format for k in ("{document}", "{thought}")):
            raise ValueError("format must contain both {document} and {thought}")
        return self


class SynthQualityConfig(Section):
    """Checks on every generation; failures go to the quarantine with the reason."""

    min_words: int = Field(8, ge=0, description="fewer words = 'empty'")
    truncated: Literal["trim", "drop", "keep"] = Field("trim", description="a text cut by max_tokens: trim to its last full sentence, drop it, or keep it")
    max_dup_ngram_frac: float = Field(0.3, gt=0, le=1, description="share of words inside repeated 3-grams above which a text is 'degenerate'")
    min_unique_word_frac: float = Field(0.3, ge=0, le=1, description="distinct/total words below which a text is 'degenerate'")
    refusal_patterns: list[str] = Field(
        default_factory=lambda: [r"\bI(?:'m| am) (?:sorry|unable)\b", r"\bI can(?:not|'t) (?:help|assist|provide|do)\b", r"\bAs an AI\b"],
        description="regexes (case-insensitive) marking a refusal",
    )


class AugmentConfig(Section):
    """Synthetic data from an LLM: EntiGraph and thought augmentation (stage ``augment``)."""

    temperature: float = Field(0.7, ge=0, le=2, description="0 = greedy")
    top_p: float = Field(0.9, gt=0, le=1)
    repetition_penalty: float = Field(1.1, ge=1, le=2)
    entigraph: EntiGraphConfig = EntiGraphConfig()
    thoughts: ThoughtsConfig = ThoughtsConfig()
    quality: SynthQualityConfig = SynthQualityConfig()
    docs_per_shard: int = Field(5000, ge=1)
    workers: int = Field(1, ge=1, description="parallel shards; each loads its own embedded model (prefer 1)")
    prompts_dir: str | None = Field(None, description="directory of prompt templates overriding the packaged ones")
    exclude_heldout: bool = Field(True, description="never augment the documents tokenize holds out for evaluation")


# ------------------------------------------------------------------------------------------ filter
class C4ScoreConfig(Section):
    """C4 line cleaning, which decides which lines count toward the page's sentences."""

    min_words_per_line: int = Field(3, ge=0)
    max_word_length: int = Field(1000, ge=-1, description="lines with a longer word are dropped; -1 = off")
    remove_citations: bool = True
    javascript: bool = Field(True, description="drop lines mentioning javascript")
    policy: bool = Field(True, description="drop lines about cookies / terms of use")


class FineWebScoreConfig(Section):
    short_line_length: int = Field(30, ge=1, description="lines this long or shorter count as short")
    stop_chars: str | None = Field(None, description="line-final characters; None = terminal punctuation")


class LabelledFile(Section):
    """Training data for the toxicity classifier: JSONL with a text and a 0/1 label, or preference pairs."""

    path: str
    format: Literal["labelled", "pairs"] = "labelled"
    text_field: str = "text"
    label_field: str = "label"
    max_rows: int | None = Field(None, ge=1)


class ToxicityScoreConfig(Section):
    wordlist: str | None = Field(None, description="one term per line; None = the shipped LDNOOBW English list")
    train_files: list[LabelledFile] = Field(default_factory=list, description="empty = no classifier")
    buckets: int = Field(1 << 18, ge=16, description="hashed n-gram features")
    ngrams: int = Field(2, ge=1, le=4)
    epochs: int = Field(200, ge=1)
    lr: float = Field(0.5, gt=0)
    l2: float = Field(1e-4, ge=0)
    hf_model_dir: str | None = Field(None, description="local text-classification model directory")
    hf_label: str = "toxic"


class PerplexityScoreConfig(Section):
    reference_domain: str | None = Field("prose", description="domain the n-gram LM learns; None = off")
    order: int = Field(3, ge=1, le=6)
    discount: float = Field(0.75, gt=0, lt=1)
    min_count: int = Field(1, ge=1, description="rarer words become <unk>")
    max_train_docs: int = Field(5000, ge=1)


class EvalFile(Section):
    path: str
    id_field: str = "id"
    text_fields: list[str] = Field(default_factory=lambda: ["question"], min_length=1)


class DecontamScoreConfig(Section):
    ngram: int = Field(13, ge=1, description="n-gram length shared with an eval item that flags a doc")
    min_ngram: int = Field(8, ge=1, description="shorter eval items are matched whole from this length")
    eval_files: list[EvalFile] = Field(default_factory=list)


class FilterScoreConfig(Section):
    """Stage ``score``: every per-document measurement, stored in ``meta["scores"]``."""

    stop_words: list[str] = Field(default_factory=lambda: ["the", "be", "to", "of", "and", "that", "have", "with"])
    top_ngrams: list[int] = Field(default_factory=lambda: [2, 3, 4])
    dup_ngrams: list[int] = Field(default_factory=lambda: [5, 6, 7, 8, 9, 10])
    c4: C4ScoreConfig = C4ScoreConfig()
    fineweb: FineWebScoreConfig = FineWebScoreConfig()
    language_chars: int = Field(2000, ge=1, description="characters given to language id")
    toxicity: ToxicityScoreConfig = ToxicityScoreConfig()
    perplexity: PerplexityScoreConfig = PerplexityScoreConfig()
    decontam: DecontamScoreConfig = DecontamScoreConfig()
    quality: QualityScoreConfig = QualityScoreConfig()
    docs_per_shard: int = Field(5000, ge=1)


class GopherQualityRules(Section):
    """Published Gopher thresholds; ``null`` switches one check off."""

    min_words: int | None = 50
    max_words: int | None = 100_000
    min_mean_word_len: float | None = 3
    max_mean_word_len: float | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines: float | None = 0.9
    max_ellipsis_lines: float | None = 0.3
    min_alpha_words: float | None = 0.8
    min_stop_words: int | None = 2


class GopherRepetitionRules(Section):
    max_dup_para_frac: float | None = 0.3
    max_dup_para_char_frac: float | None = 0.2
    max_dup_line_frac: float | None = 0.3
    max_dup_line_char_frac: float | None = 0.2
    max_top_ngram_frac: dict[int, float] = Field(default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16})
    max_dup_ngram_frac: dict[int, float] = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10})


class C4Rules(Section):
    min_sentences: int | None = 5
    lorem_ipsum: bool = True
    curly_bracket: bool = True
    remove_lines: bool = Field(False, description="keep only C4's clean lines in kept documents")


class FineWebRules(Section):
    min_line_punct_ratio: float | None = 0.12
    line_punct_exclude_zero: bool = False
    max_short_line_ratio: float | None = 0.67
    max_char_dup_ratio: float | None = 0.01
    max_list_ratio: float | None = 0.3


class LanguageRules(Section):
    languages: list[str] = Field(default_factory=lambda: ["en"], min_length=1)
    min_score: float = Field(0.65, ge=0, le=1)


class ToxicityRules(Section):
    max_word_frac: float | None = Field(0.01, ge=0, description="share of words on the list")
    max_classifier: float | None = Field(0.5, ge=0, le=1)
    max_hf: float | None = Field(0.5, ge=0, le=1)


class PerplexityRules(Section):
    max_perplexity: float | None = Field(None, gt=0)
    max_percentile: float | None = Field(None, gt=0, le=100, description="drop the tail above it (per domain)")
    bands: tuple[float, float] = Field((33.3, 66.7), description="head/middle/tail percentile cut points")


class EncodingRules(Section):
    max_mojibake: int | None = Field(0, ge=0, description="mis-decoded UTF-8 sequences allowed")


class RuleSet(Section):
    """Which rule families apply to a domain, with their thresholds (``null`` = family off)."""

    encoding: EncodingRules | None = EncodingRules()
    language: LanguageRules | None = LanguageRules()
    gopher_quality: GopherQualityRules | None = GopherQualityRules()
    gopher_repetition: GopherRepetitionRules | None = GopherRepetitionRules()
    c4: C4Rules | None = C4Rules()
    fineweb: FineWebRules | None = FineWebRules()
    toxicity: ToxicityRules | None = ToxicityRules()
    perplexity: PerplexityRules | None = None
    quality: QualityRules | None = QualityRules()
    decontamination: bool = True
    pii_scrub: bool = True


class FilterSelectConfig(Section):
    """Stage ``filter``: thresholds per domain over the stored scores (cheap to re-run)."""

    default: RuleSet = Field(RuleSet(), description="rule set of domains not named in ``domains``")
    domains: dict[str, RuleSet] = Field(default_factory=dict)
    bypass: bool = Field(False, description="keep every training document unjudged (a no-filter arm); the rules "
                         "still judge the held-out sample, so its clean part does not change with this switch")
    pii_replacements: dict[str, str] = Field(
        default_factory=lambda: {"email": "<EMAIL>", "phone": "<PHONE>", "ip": "<IP_ADDRESS>"})
    toxicity_sweep: list[float] = Field(
        default_factory=lambda: [0.0, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1], description="plotted thresholds")
    plot_sample: int = Field(50_000, ge=100, description="documents kept in memory for the histograms")
    docs_per_shard: int = Field(5000, ge=1)

    def rules_for(self, domain: str) -> RuleSet:
        return self.domains.get(domain, self.default)


class FilterConfig(Section):
    score: FilterScoreConfig = FilterScoreConfig()
    select: FilterSelectConfig = FilterSelectConfig()


# ------------------------------------------------------------------------------------------- root
# -------------------------------------------------------------------------------------------- tune
Range = tuple[float, float]


class SurrogateConfig(Section):
    """RegMix-style search (``tune.method: surrogate``, :mod:`lmpipe.surrogate`): proxy runs on Dirichlet draws,
    a gradient-boosted regressor from weights to the objective, its minimum over the simplex checked by a real run."""

    n_runs: int = Field(24, ge=4, description="proxy runs on mixtures drawn from Dirichlet(alpha) over the domains")
    alpha: float = Field(1.0, gt=0, description="Dirichlet concentration of the draws (1 = uniform on the simplex)")
    holdout: float = Field(0.25, gt=0, lt=1, description="share of proxy runs held out to measure rank correlation")
    candidates: int = Field(20_000, ge=100, description="simplex points (uniform) scored on the surrogate")
    top_k: int = Field(1000, ge=1, description="best predicted points averaged into the proposal (as RegMix)")
    n_estimators: int = Field(300, ge=1)
    max_depth: int = Field(3, ge=1)
    learning_rate: float = Field(0.05, gt=0, le=1)


class PruningConfig(Section):
    """Stop hopeless proxy runs early: every ``every`` steps a trial reports its mean loss on the target domains'
    validation windows; Optuna's median pruner stops it when it is worse than the median of earlier trials there."""

    enabled: bool = False
    every: int = Field(5, ge=1, description="optimizer steps between intermediate target-loss reports")
    n_startup_trials: int = Field(2, ge=0, description="trials that run to the end before anything is pruned")
    n_warmup_steps: int = Field(0, ge=0, description="no pruning before this step of a trial")
    val_batches: int = Field(2, ge=1, description="target-domain validation batches per report")


class TuneConfig(Section):
    """Optuna search over mixture weights (and optionally the LR) by short training runs (``lmpipe.tuning``).

    Search space: one float per domain, drawn in its ``weights`` range, then divided by their sum (a point on
    the simplex; a domain with range ``[x, x]`` is fixed, ``[0, 0]`` is left out). ``lr``: a number is fixed,
    a ``[low, high]`` pair is searched log-uniformly. Objective: mean held-out bits/byte over ``targets``.
    """

    storage: str = Field("sqlite:///data/tune/optuna.db", description="any Optuna RDB URL (SQLite, Postgres, MySQL)")
    method: Literal["tpe", "surrogate", "pareto"] = Field(
        "tpe", description="tpe: Optuna TPE study of n_trials; surrogate: RegMix-style regression (see `surrogate`); "
        "pareto: targets' loss vs old domains' loss, multi-objective (see `pareto`)")
    surrogate: SurrogateConfig = SurrogateConfig()
    pareto: ParetoConfig = ParetoConfig()
    pruning: PruningConfig = PruningConfig()
    study_name: str = Field("mixture", min_length=1)
    n_trials: int = Field(6, ge=1, description="run until the study has this many COMPLETE trials (resumes)")
    max_failed: int = Field(3, ge=0, description="stop this run after this many failed trials")
    seed: int | None = Field(None, ge=0, description="TPE sampler and training seed; None = run.seed")
    n_startup_trials: int = Field(4, ge=0, description="random trials before TPE models the history")
    enqueue_current: bool = Field(True, description="first trial: the current mixture.weights (the baseline)")
    weights: dict[str, Range] = Field(
        default_factory=lambda: {"prose": (0.0, 1.0), "code": (0.0, 1.0), "math": (0.0, 1.0), "fiction": (0.0, 1.0)},
        description="domain -> [low, high] of its raw weight before normalisation",
    )
    lr: float | Range = Field(3e-3, description="fixed LR, or [low, high] searched log-uniformly")
    targets: list[str] = Field(
        default_factory=lambda: ["prose", "code", "math", "fiction"], min_length=1,
        description="held-out domains whose mean bits/byte is minimised",
    )
    steps: int = Field(25, ge=1, description="optimizer steps per trial")
    batch_size: int = Field(4, ge=1)
    seq_len: int = Field(128, ge=2)
    warmup_steps: int = Field(5, ge=0)
    heldout: HeldoutConfig = HeldoutConfig(max_docs_per_domain=20, max_tokens_per_domain=4000)
    batch_tokens: int = Field(2048, ge=16, description="padded tokens per scoring forward pass")
    threads: int = Field(1, ge=1, description="torch threads per trial")
    heartbeat_s: int | None = Field(
        60, ge=1, description="RDB heartbeat: trials of a killed worker become FAIL after 2x this; None = off")

    @model_validator(mode="after")
    def _ranges(self) -> TuneConfig:
        for d, (lo, hi) in self.weights.items():
            if not 0.0 <= lo <= hi:
                raise ValueError(f"weights.{d}: need 0 <= low <= high, got [{lo}, {hi}]")
        if not any(hi > 0 for _, hi in self.weights.values()):
            raise ValueError("weights: at least one domain needs a positive upper bound")
        if isinstance(self.lr, tuple) and not 0 < self.lr[0] <= self.lr[1]:
            raise ValueError(f"lr: need 0 < low <= high, got {list(self.lr)}")
        if isinstance(self.lr, float) and self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.warmup_steps >= self.steps:  # fail at validation, not once per trial
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be below steps ({self.steps})")
        return self


class Params(Section):
    # Sections added by later stages are optional so a params.yaml with only the early stages validates.
    model_config = ConfigDict(extra="forbid")

    run: RunConfig = RunConfig()
    demo: DemoConfig = DemoConfig()
    ingest: IngestConfig
    llm: LLMConfig = LLMConfig()
    augment: AugmentConfig = AugmentConfig()
    filter: FilterConfig = FilterConfig()
    dedup: DedupConfig = DedupConfig()
    refine: RefineConfig = RefineConfig()
    condition: ConditionConfig = ConditionConfig()
    gates: GatesConfig = GatesConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    report: ReportConfig = ReportConfig()
    tokenize: TokenizeConfig = TokenizeConfig()
    mixture: MixtureConfig = MixtureConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    tune: TuneConfig = TuneConfig()
    cpt: CptConfig = CptConfig()
    cmr: CmrConfig = CmrConfig()
    posttrain: PosttrainConfig = PosttrainConfig()
    quality: QualityConfig = QualityConfig()


class ConfigError(ValueError):
    """params.yaml failed validation; the message lists every problem with its YAML path."""


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def _describe(err: dict[str, Any]) -> str:
    msg = err["msg"]
    ctx = err.get("ctx") or {}
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
        parent = err["loc"][:-1]
        allowed = _allowed_keys(parent)
        if allowed:
            msg += f" (allowed: {', '.join(sorted(allowed))})"
    elif "expected" in ctx and str(ctx["expected"]) not in msg:
        msg += f" (allowed: {ctx['expected']})"
    got = err.get("input")
    if err["type"] != "missing" and not isinstance(got, dict | list):
        msg += f"; got {got!r}"
    return f"{_path(err['loc'])}: {msg}"


def _allowed_keys(loc: tuple[Any, ...]) -> set[str]:
    model: Any = Params
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return set()
        model = _unwrap(field.annotation)
    return set(getattr(model, "model_fields", {}))


def _unwrap(tp: Any) -> Any:
    args = getattr(tp, "__args__", ())
    for a in (tp, *args):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
        inner = _unwrap(a) if a is not tp and getattr(a, "__args__", None) else None
        if inner is not None:
            return inner
    return None


def parse_params(raw: dict[str, Any], origin: str = "params.yaml") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(e) for e in exc.errors()]
        raise ConfigError(f"{origin} is invalid ({len(lines)} problem(s)):\n  " + "\n  ".join(lines)) from None


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found (run from the project root or pass --params)")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return raw


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` on top of ``base``: mappings merge key by key, anything else (lists too) replaces."""
    out = dict(base)
    for k, v in overrides.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_params(path: str | Path = DEFAULT_PARAMS, profile: str | Path | None = None) -> Params:
    """Validated params; a ``profile`` (a YAML of overrides, e.g. ``profiles/tiny.yaml``) is merged on top."""
    raw = read_yaml_mapping(path)
    if profile is not None:
        raw = deep_merge(raw, read_yaml_mapping(profile))
    return parse_params(raw, f"{path} + {profile}" if profile else str(path))
