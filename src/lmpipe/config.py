"""Typed view of ``params.yaml``: ``Params`` assembling every section, and the parsing and error reporting.

Each section's schema and defaults live beside its component (``lmpipe.<area>.config``, or
``<module>_config.py`` beside a single-module component), as a pydantic model with ``extra="forbid"``
(:class:`lmpipe.sections.Section`) so a typo fails fast. Errors name the YAML path
(``ingest.sources[1].format``), what was wrong, and where applicable the allowed values. The stages that read
a section declare it as their DVC params (``stages/registry.py``); this module, and with it every section
module, is in every stage's code deps, so a changed default reruns what it touches. Section modules import
only pydantic, the standard library and other section modules: importing this stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lmpipe.conditioning.config import ConditionConfig
from lmpipe.dedup.config import DedupConfig
from lmpipe.demo.config import DemoConfig
from lmpipe.evaluation.config import EvaluateConfig
from lmpipe.filters.config import FilterConfig
from lmpipe.gates_config import GatesConfig
from lmpipe.ingest_config import IngestConfig
from lmpipe.llm.config import LLMConfig
from lmpipe.mixing.config import CmrConfig, MixtureConfig, TuneConfig
from lmpipe.posttrain.config import PosttrainConfig
from lmpipe.quality.config import QualityConfig
from lmpipe.refine.config import RefineConfig
from lmpipe.report_config import ReportConfig
from lmpipe.sections import Section
from lmpipe.synth.config import AugmentConfig
from lmpipe.tokenization_config import TokenizeConfig
from lmpipe.training.config import CptConfig, ModelConfig, TrainConfig

DEFAULT_PARAMS = Path("params.yaml")


class ExecutorConfig(Section):
    """Where shard-parallel data work runs. Results never depend on this choice."""

    kind: Literal["local", "dask", "ray"] = "local"
    workers: int = Field(2, ge=1, le=4096, description="processes (local) or workers (dask LocalCluster)")
    address: str | None = Field(
        None, description="dask scheduler 'tcp://host:8786' or ray 'ray://host:10001'"
    )


class RunConfig(Section):
    seed: int = Field(1234, ge=0)
    executor: ExecutorConfig = ExecutorConfig()


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
        raise ConfigError(
            f"{origin} is invalid ({len(lines)} problem(s)):\n  " + "\n  ".join(lines)
        ) from None


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
