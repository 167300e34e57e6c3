"""A study file (``studies/NAME.yaml``): arms × seeds run as DVC experiments, the metrics compared and the claims.

Everything is checked before anything runs: each override key against the typed ``Params`` schema, each
arm's effective params (params.yaml + profile + arm + seed) as a whole, each metric against the metrics files
the target stage and its upstream stages declare, each claim against the arms. Errors name the YAML path
inside the study file (``studies/a.yaml: arms.raw.params.dedup.exactt: unknown key (allowed: ...)``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lmpipe.config import ConfigError, Params, _unwrap, parse_params, read_yaml_mapping
from lmpipe.studies.experiments import get_key

NAME = r"^[a-z0-9][a-z0-9_-]*$"  # arm and study names end up in git ref names (DVC experiment names)

# Overrides a switch silences: (key prefix, switch, its value that silences it, what is read instead). An arm that
# sets one while the switch has that value would run, and quietly compare identical runs.
SHADOWED = [
    (
        "mixture.weights",
        "mixture.from_tune",
        True,
        "pretrain reads the tune stage's winner (best_mixture.yaml)",
    ),
]
Flat = dict[str, Any]


class StudyError(ValueError):
    """A study file is invalid; the message lists every problem with its YAML path."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Arm(_Model):
    description: str = ""
    control: bool = False
    params: dict[str, Any] = Field(default_factory=dict, description="overrides; nested or dotted keys")


class Metric(_Model):
    path: str = Field(..., description="'<stage>.<key>.<key>...' into metrics/<stage>.json")
    better: Literal["lower", "higher"] = "lower"
    kind: Literal["continuous", "accuracy"] = Field(
        "continuous",
        description="likelihood-type metrics vs discrete accuracies (scale transfer reports both)",
    )
    new_key: bool = Field(
        False,
        description="written by code newer than the committed reference run: not looked up in its metrics",
    )

    @property
    def file(self) -> str:
        return f"metrics/{self.path.split('.', 1)[0]}.json"

    @property
    def keys(self) -> list[str]:
        return self.path.split(".")[1:]


class Curve(_Model):
    path: str = Field(
        ..., description="a DVCLive TSV in the experiment, e.g. dvclive/pretrain/plots/metrics/val/loss.tsv"
    )
    x: str = "step"
    y: str | None = Field(None, description="column; default: the file's stem")


class Claim(_Model):
    claim: str
    source: str = Field(..., min_length=3, description="the paper the expected ordering comes from")
    metric: str
    expect: str = Field(
        ..., description="an ordering of arms on the metric, e.g. 'filtered < raw' or 'a > b > c'"
    )

    def pairs(self) -> list[tuple[str, str, str]]:
        """``'a < b > c'`` → ``[(a, '<', b), (b, '>', c)]``."""
        parts = [p.strip() for p in re.split(r"\s*([<>])\s*", self.expect.strip())]
        return [(parts[i], parts[i + 1], parts[i + 2]) for i in range(0, len(parts) - 2, 2)]


class Study(_Model):
    title: str
    description: str = ""
    notes: str = Field("", description="what was tried when a claim did not reproduce (scale, data, seeds)")
    profile: str | None = Field(
        None, description="profiles/<name>.yaml: overrides applied on top of params.yaml"
    )
    target: str = Field(..., description="run every experiment up to this stage")
    seeds: list[int] = Field(..., min_length=1)
    params: dict[str, Any] = Field(
        default_factory=dict, description="overrides shared by every arm (after the profile)"
    )
    seed_param: str = Field("train.seed", description="the param each seed sets")
    jobs: int = Field(1, ge=1, description="experiments run in parallel (dvc queue workers)")
    mode: Literal["queue", "workspace"] = Field(
        "queue", description="queue: temp workspaces, `jobs` in parallel; workspace: one by one in place"
    )
    arms: dict[str, Arm] = Field(..., min_length=2)
    metrics: dict[str, Metric] = Field(..., min_length=1)
    curves: dict[str, Curve] = Field(default_factory=dict)
    claims: list[Claim] = Field(default_factory=list)
    interval: Literal["t", "bootstrap"] = Field(
        "t", description="95 % interval: Student t (default) or bootstrap"
    )

    # filled by load_study, not read from the file
    name: str = ""
    label: str = Field("", description="name of this run's results: NAME, or NAME.PROFILE at another profile")
    profile_params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds repeat: {v}")
        return v

    @field_validator("arms")
    @classmethod
    def _arm_names(cls, v: dict[str, Arm]) -> dict[str, Arm]:
        bad = [a for a in v if not re.match(NAME, a)]
        if bad:
            raise ValueError(f"arm names must match {NAME}: {bad}")
        controls = [a for a, arm in v.items() if arm.control]
        if len(controls) != 1:
            raise ValueError(f"exactly one arm needs control: true; got {controls or 'none'}")
        return v

    @model_validator(mode="after")
    def _claims(self) -> Study:
        problems = []
        for i, c in enumerate(self.claims):
            if c.metric not in self.metrics:
                problems.append(
                    f"claims[{i}].metric: unknown metric {c.metric!r} (defined: {', '.join(self.metrics)})"
                )
            pairs = c.pairs()
            if not pairs:
                problems.append(f"claims[{i}].expect: {c.expect!r} names no ordering of arms ('a < b')")
            for a, _, b in pairs:
                for arm in (a, b):
                    if arm not in self.arms:
                        problems.append(
                            f"claims[{i}].expect: {arm!r} is not an arm (arms: {', '.join(self.arms)})"
                        )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def control(self) -> str:
        return next(a for a, arm in self.arms.items() if arm.control)

    def overrides(self, arm: str, seed: int) -> Flat:
        """Every param an experiment sets: profile, study-wide params, the arm, the seed (later wins)."""
        return {
            **flatten(self.profile_params),
            **flatten(self.params),
            **flatten(self.arms[arm].params),
            self.seed_param: seed,
        }

    def exp_name(self, arm: str, seed: int) -> str:
        """Deterministic DVC experiment name; the hash changes when any override changes, so an edited arm
        is a new experiment while an unchanged one is found again."""
        digest = hashlib.sha256(json.dumps(self.overrides(arm, seed), sort_keys=True).encode()).hexdigest()[
            :8
        ]
        return f"{self.name}-{arm}-s{seed}-{digest}"


def flatten(d: dict[str, Any], prefix: str = "") -> Flat:
    """Nested (or already dotted) mappings → ``{'a.b.c': leaf}``; lists are leaves."""
    out: Flat = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for p in parents:
        nxt = d.get(p)
        if not isinstance(nxt, dict):
            nxt = d[p] = {}
        d = nxt
    d[leaf] = value


def check_key(key: str) -> str | None:
    """Why ``key`` is not a param of the ``Params`` schema, or None. Free-form mappings (``mixture.weights``,
    ``filter.select.domains``) accept any name and continue into their value type."""
    tp: Any = Params
    for depth, part in enumerate(key.split(".")):
        here = ".".join(key.split(".")[:depth]) or "<root>"
        model = _unwrap(tp)
        origin = getattr(tp, "__origin__", None)
        if origin is dict or dict in _origins(tp):
            tp = _dict_value(tp)
            continue
        if model is None:
            return f"{here} is a value, not a section (cannot set {part!r} inside it)"
        field = model.model_fields.get(part)
        if field is None:
            return f"unknown key {part!r} in {here} (allowed: {', '.join(sorted(model.model_fields))})"
        tp = field.annotation
    return None


def _origins(tp: Any) -> set[Any]:
    return {getattr(a, "__origin__", a) for a in getattr(tp, "__args__", ())}


def _dict_value(tp: Any) -> Any:
    if getattr(tp, "__origin__", None) is dict:
        return tp.__args__[1]
    return next(_dict_value(a) for a in tp.__args__ if getattr(a, "__origin__", None) is dict)


def metric_files(root: Path, target: str) -> dict[str, str]:
    """Metrics files declared by ``target`` and every stage upstream of it (DVC's own graph): path → stage.
    Kept per dvc.yaml version: DVC parses dvc.yaml and dvc.lock (~3 s here) on every collect."""
    st = (Path(root) / "dvc.yaml").stat()
    return dict(_metric_files(str(Path(root).resolve()), target, st.st_mtime_ns, st.st_size))


@functools.lru_cache(maxsize=32)
def _metric_files(root: str, target: str, _mtime_ns: int, _size: int) -> tuple[tuple[str, str], ...]:
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(".") as repo:  # DVC resolves a stage name against the cwd
        stages = repo.stage.collect(target, with_deps=True)
        return tuple((out.def_path, st.name) for st in stages for out in st.outs if out.metric)


def _lookup(data: Any, keys: list[str]) -> tuple[bool, str]:
    for i, k in enumerate(keys):
        if not isinstance(data, dict) or k not in data:
            have = ", ".join(sorted(data)) if isinstance(data, dict) else type(data).__name__
            return False, f"no key {'.'.join(keys[: i + 1])!r} (there: {have})"
        data = data[k]
    return True, ""


def _shadowed(study: Study, arm: str, merged: dict[str, Any]) -> list[str]:
    """Overrides that the arm's effective params make ineffective (see ``SHADOWED``): set at the same or a more
    specific level (params.yaml < profile < study < arm) than the switch value that silences them. An arm that
    turns the switch on itself means to leave the profile's values unused."""
    levels = [flatten(study.profile_params), flatten(study.params), flatten(study.arms[arm].params)]
    out = []
    for prefix, switch, value, instead in SHADOWED:
        try:
            silenced = get_key(merged, switch) == value
        except (KeyError, TypeError):
            silenced = False
        if not silenced:
            continue
        switch_level = max((i for i, lv in enumerate(levels) if switch in lv), default=-1)
        set_here = [
            k
            for lv in levels[max(switch_level, 0) :]
            for k in lv
            if k == prefix or k.startswith(prefix + ".")
        ]
        if set_here:
            out.append(
                f"arms.{arm} (with profile and study params): sets {', '.join(set_here)} but {switch} is "
                f"{json.dumps(value)}, so it has no effect ({instead}); set {switch}: {json.dumps(not value)} "
                "in the profile, the study or the arm"
            )
    return out


def load_study(name_or_path: str | Path, root: str | Path = ".", profile: str | None = None) -> Study:
    """Read and fully validate ``studies/NAME.yaml`` (or a path) against the project at ``root``; ``profile``
    runs it at another profile than the file names ('none': params.yaml as is), with its own results."""
    root = Path(root)
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = root / "studies" / f"{name_or_path}.yaml"
    if not path.exists():
        raise StudyError(f"{path}: no such study file")
    raw = yaml.safe_load(path.read_text()) or {}
    where = str(path)
    try:
        study = Study.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            msg = e["msg"].removeprefix("Value error, ")
            where_in = ".".join(str(p) for p in e["loc"])
            lines += [f"{where_in}: {m}" if where_in else m for m in msg.split("; ")]
        raise StudyError(f"{where} is invalid:\n  " + "\n  ".join(lines)) from None
    study.name = path.stem
    study.label = study.name
    if profile is not None and profile != study.profile:
        study.profile = None if profile == "none" else profile
        study.label = f"{study.name}.{profile}"
    problems: list[str] = []
    if not re.match(NAME, study.name):
        problems.append(f"<file name>: study names must match {NAME}, got {study.name!r}")

    if study.profile:
        ppath = root / "profiles" / f"{study.profile}.yaml"
        if not ppath.exists():
            problems.append(f"profile: {ppath} not found")
        else:
            study.profile_params = read_yaml_mapping(ppath)
            problems += [
                f"profile ({ppath}): {k}: {why}"
                for k in flatten(study.profile_params)
                if (why := check_key(k))
            ]
    if why := check_key(study.seed_param):
        problems.append(f"seed_param: {study.seed_param}: {why}")
    problems += [f"params.{k}: {why}" for k in flatten(study.params) if (why := check_key(k))]
    for arm, spec in study.arms.items():
        problems += [f"arms.{arm}.params.{k}: {why}" for k in flatten(spec.params) if (why := check_key(k))]
    if not problems:  # every arm's effective params must validate as a whole (types, ranges, cross-checks)
        base = yaml.safe_load((root / "params.yaml").read_text()) or {}
        for arm in study.arms:
            merged = json.loads(json.dumps(base))
            for k, v in study.overrides(arm, study.seeds[0]).items():
                set_dotted(merged, k, v)
            try:
                parse_params(merged, f"arms.{arm} (params.yaml + profile + arm)")
            except ConfigError as e:
                problems.append(str(e))
            problems += _shadowed(study, arm, merged)

    try:
        files = metric_files(root, study.target)
    except Exception as e:  # noqa: BLE001 - DVC raises many kinds for an unknown stage
        problems.append(f"target: {study.target!r} is not a stage of dvc.yaml ({type(e).__name__}: {e})")
        files = None
    if files is not None:
        for m, spec in study.metrics.items():
            if spec.file not in files:
                problems.append(
                    f"metrics.{m}.path: {spec.file} is not written by {study.target!r} or its upstream "
                    f"stages (they write: {', '.join(sorted(files))})"
                )
                continue
            ref = (
                root / spec.file
            )  # the committed reference run: catches a misspelt key before hours of training
            if spec.new_key:
                continue
            if ref.exists() and not spec.keys:
                problems.append(f"metrics.{m}.path: name a key inside {spec.file}")
            elif ref.exists():
                ok, why = _lookup(json.loads(ref.read_text()), spec.keys)
                if not ok:
                    problems.append(f"metrics.{m}.path: {why} in {spec.file}")
    if problems:
        raise StudyError(f"{where} is invalid ({len(problems)} problem(s)):\n  " + "\n  ".join(problems))
    return study
