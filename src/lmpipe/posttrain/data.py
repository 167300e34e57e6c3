"""Instruction, preference and prompt records: readers for common formats, checks, quarantine with reasons.

Every reader yields ``Chat`` / ``Pair`` / ``Prompt`` records or ``Quarantined`` ones, never drops silently:
``in = kept + rejected`` per file (an Alpaca seed task counts once per instance; a record that cannot yield
any counts once). Reasons: ``malformed_json``, ``missing_field``, ``missing_role`` (no role or an unknown one),
``empty_turn``, ``non_alternating`` (after an optional system turn: user, assistant, user, ...),
``unparsable_transcript`` (HH-RLHF text not in Human/Assistant form), ``prompt_mismatch`` (chosen and
rejected transcripts of a pair with different prompts). Later steps add ``over_length`` and ``contaminated``.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmpipe.posttrain.config import InstructSource

ROLES = ("system", "user", "assistant")
Message = dict[str, str]


@dataclass
class Chat:
    id: str
    source: str
    messages: list[Message]


@dataclass
class Pair:
    """A preference pair: the prompt turns (ending with a user turn) and two assistant replies."""

    id: str
    source: str
    prompt: list[Message]
    chosen: str
    rejected: str


@dataclass
class Prompt:
    """A prompt with a verifiable answer (``kind``: math | qa | format), for on-policy pairs and RLVR."""

    id: str
    source: str
    prompt: list[Message]
    answer: str
    kind: str


@dataclass
class Quarantined:
    id: str
    source: str
    reason: str
    detail: str
    raw: str


Record = Chat | Pair | Prompt


@dataclass
class Split:
    """The outcome of reading or checking records: kept + rejected, with counts that must add up."""

    kept: list[Any] = field(default_factory=list)
    rejected: list[Quarantined] = field(default_factory=list)

    def extend(self, other: Split) -> None:
        self.kept.extend(other.kept)
        self.rejected.extend(other.rejected)

    def counts(self) -> dict[str, Any]:
        return {
            "in": len(self.kept) + len(self.rejected),
            "kept": len(self.kept),
            "rejected": dict(sorted(Counter(r.reason for r in self.rejected).items())),
        }


class BadRecord(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def check_turns(messages: Any, final: str | None = "assistant") -> list[Message]:
    """Validated copy of a chat: known roles, non-empty text, strict alternation, last turn ``final``."""
    if not isinstance(messages, list) or not messages:
        raise BadRecord("missing_field", "messages must be a non-empty list")
    out = []
    for k, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            role = m.get("role") if isinstance(m, dict) else type(m).__name__
            raise BadRecord("missing_role", f"turn {k}: role {role!r} not one of {list(ROLES)}")
        if not isinstance(m.get("content"), str) or not m["content"].strip():
            raise BadRecord("empty_turn", f"turn {k} ({m['role']}) has no text")
        out.append({"role": m["role"], "content": m["content"]})
    body = out[1:] if out[0]["role"] == "system" else out
    for k, m in enumerate(body):
        want = "user" if k % 2 == 0 else "assistant"
        if m["role"] != want:
            raise BadRecord(
                "non_alternating", f"turn {k + len(out) - len(body)} is {m['role']}, expected {want}"
            )
    if final is not None and (not body or body[-1]["role"] != final):
        raise BadRecord(
            "non_alternating", f"last turn must be {final}, got {body[-1]['role'] if body else 'none'}"
        )
    return out


_TURN = re.compile(r"\n\n(Human|Assistant): ")


def parse_transcript(text: str) -> list[Message]:
    """``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` (HH-RLHF) → chat turns."""
    if not isinstance(text, str) or not text.startswith("\n\nHuman: "):
        raise BadRecord("unparsable_transcript", "does not start with '\\n\\nHuman: '")
    parts = _TURN.split(text)[1:]  # [role, text, role, text, ...]
    turns = [
        {"role": "user" if r == "Human" else "assistant", "content": t.strip()}
        for r, t in zip(parts[::2], parts[1::2], strict=True)
    ]
    try:
        return check_turns(turns)
    except BadRecord as e:
        raise BadRecord("unparsable_transcript", e.detail) from None


def _rows(path: Path) -> Iterator[tuple[int, Any, str]]:
    """(line number, parsed JSON or None, raw text) for JSONL, a JSON array, gzip or not."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    text = data.decode("utf-8", errors="replace")
    if text.lstrip().startswith("["):
        for n, row in enumerate(json.loads(text), 1):
            yield n, row, json.dumps(row, ensure_ascii=False)
        return
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield n, json.loads(line), line
            except json.JSONDecodeError as exc:
                yield n, None, f"{exc.msg}\t{line}"


def _text(row: dict, key: str) -> str:
    v = row.get(key)
    if v is None:
        raise BadRecord("missing_field", f"no {key!r}")
    if not isinstance(v, str) or not v.strip():
        raise BadRecord("empty_turn", f"{key!r} is empty")
    return v


def _alpaca_chat(instruction: str, inp: str | None, output: str) -> list[Message]:
    user = instruction.strip() + (f"\n\n{inp.strip()}" if inp and inp.strip() else "")
    return check_turns([{"role": "user", "content": user}, {"role": "assistant", "content": output}])


def _convert(src: InstructSource, rid: str, row: dict) -> list[tuple[str, Record]]:
    fmt, name = src.format, Path(src.path).name
    if fmt == "messages":
        return [(rid, Chat(rid, name, check_turns(row.get("messages"))))]
    if fmt == "alpaca":
        return [
            (
                rid,
                Chat(
                    rid, name, _alpaca_chat(_text(row, "instruction"), row.get("input"), _text(row, "output"))
                ),
            )
        ]
    if fmt == "alpaca_seed":
        inst = _text(row, "instruction")
        instances = row.get("instances")
        if not isinstance(instances, list) or not instances:
            raise BadRecord("missing_field", "no 'instances'")
        return [
            (f"{rid}#{k}", Chat(f"{rid}#{k}", name, _alpaca_chat(inst, x.get("input"), _text(x, "output"))))
            for k, x in enumerate(instances)
        ]
    if fmt == "hh_rlhf":
        chosen, rejected = parse_transcript(row.get("chosen")), parse_transcript(row.get("rejected"))
        if chosen[:-1] != rejected[:-1]:
            raise BadRecord("prompt_mismatch", "chosen and rejected transcripts differ before the last reply")
        return [(rid, Pair(rid, name, chosen[:-1], chosen[-1]["content"], rejected[-1]["content"]))]
    if fmt == "pairs":
        prompt = check_turns(row.get("messages"), final="user")
        return [(rid, Pair(rid, name, prompt, _text(row, "chosen"), _text(row, "rejected")))]
    prompt = check_turns(row.get("messages"), final="user")  # prompts
    kind = row.get("kind", "qa")
    return [(rid, Prompt(rid, name, prompt, _text(row, "answer"), str(kind)))]


def _instance_ids(src: InstructSource, rid: str, row: dict) -> list[str]:
    """Ids of the units one bad record stands for (so an Alpaca seed task with 3 bad instances counts 3)."""
    instances = row.get("instances") if src.format == "alpaca_seed" else None
    if isinstance(instances, list) and instances:
        return [f"{rid}#{k}" for k in range(len(instances))]
    return [rid]


def read_source(src: InstructSource) -> Split:
    path = Path(src.path)
    if not path.is_file():
        raise FileNotFoundError(f"instruction source {path} ({src.format}) not found")
    out, name = Split(), path.name
    for n, row, raw in _rows(path):
        if src.max_records is not None and n > src.max_records:
            break
        rid = str(row.get("id", f"{path.stem}:{n}")) if isinstance(row, dict) else f"{path.stem}:{n}"
        if row is None or not isinstance(row, dict):
            out.rejected.append(Quarantined(rid, name, "malformed_json", f"line {n}: not a JSON object", raw))
            continue
        try:
            out.kept.extend(rec for _, rec in _convert(src, rid, row))
        except BadRecord as e:
            out.rejected.extend(
                Quarantined(i, name, e.reason, e.detail, raw) for i in _instance_ids(src, rid, row)
            )
    return out


def read_sources(sources: list[InstructSource]) -> tuple[Split, dict[str, dict]]:
    """All sources as one split, plus the counts of each file."""
    total, per_file = Split(), {}
    for src in sources:
        part = read_source(src)
        per_file[src.path] = part.counts()
        total.extend(part)
    return total, per_file


def write_jsonl(path: str | Path, rows: list[Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(
        "".join(
            json.dumps(asdict(r) if hasattr(r, "__dataclass_fields__") else r, ensure_ascii=False) + "\n"
            for r in rows
        )
    )
    tmp.replace(path)


def record_text(rec: Record) -> str:
    """All the text of a record, as decontamination sees it."""
    turns = rec.messages if isinstance(rec, Chat) else rec.prompt
    extra = (
        [rec.chosen, rec.rejected]
        if isinstance(rec, Pair)
        else [rec.answer]
        if isinstance(rec, Prompt)
        else []
    )
    return "\n".join([m["content"] for m in turns] + extra)
