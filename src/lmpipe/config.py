"""Typed view of ``params.yaml``: the one place for knobs.

Every section is a pydantic model with ``extra="forbid"`` so a typo fails fast. Errors name the YAML path
(``ingest.sources[1].format``), what was wrong, and where applicable the allowed values.
Sections are owned by the stage of the same name; each stage reads only its own section (and ``run``),
which is also what ``dvc.yaml`` declares as that stage's params, so DVC reruns exactly what a change touches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_PARAMS = Path("params.yaml")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


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
    min_doc_chars: int = Field(200, ge=1)
    max_doc_chars: int = Field(6000, ge=100)


# ------------------------------------------------------------------------------------------ ingest
TextSplit = Literal["file", "paragraph", "line", "heading"]
Format = Literal["auto", "txt", "jsonl", "parquet", "hf_disk", "hf_hub"]


class SourceConfig(Section):
    """One input: local path/glob, ``s3://bucket/prefix/*.jsonl``, or a Hugging Face dataset."""

    uri: str = Field(..., min_length=1)
    domain: str = Field(..., pattern=r"^[a-z][a-z0-9_]*$")
    format: Format = "auto"
    text_field: str = "text"
    split: TextSplit = Field("file", description="how a .txt file becomes documents")
    hf_split: str = "train"
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, moto, Ceph)")


class IngestConfig(Section):
    sources: list[SourceConfig] = Field(default_factory=list, min_length=1)
    docs_per_shard: int = Field(5000, ge=1)
    group_mib: int = Field(64, ge=1, description="small input files are read together up to this size")
    min_chars: int = Field(1, ge=0, description="shorter documents are quarantined as 'empty'")
    max_chars: int = Field(1_000_000, ge=1, description="longer documents are quarantined as 'oversize'")

    @model_validator(mode="after")
    def _bounds(self) -> IngestConfig:
        if self.min_chars >= self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) must be below max_chars ({self.max_chars})")
        return self


# ------------------------------------------------------------------------------------------- root
class Params(Section):
    # Sections added by later stages are optional so a params.yaml with only the early stages validates.
    model_config = ConfigDict(extra="forbid")

    run: RunConfig = RunConfig()
    demo: DemoConfig = DemoConfig()
    ingest: IngestConfig


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
    elif "expected" in ctx:
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


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found (run from the project root or pass --params)")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return parse_params(raw, str(path))
