"""EntiGraph (Yang et al., "Synthetic continued pretraining"): turn one document into many.

Step 1 asks the model for the document's salient entities and a one-line summary as JSON, by default with
a JSON schema as ``response_format`` so that backends with constrained decoding can only answer in that
shape. Without it small models often answer with broken JSON, so parsing is forgiving (code fences, trailing text, single quotes,
trailing commas, a reply cut off mid-list are repaired), entities must occur in the document (no invented
ones), a failed parse is retried with a new seed, and after ``json_attempts`` a heuristic extractor over
capitalised phrases takes over. Which path produced the entities is recorded.

Step 2 samples entity pairs and triples with a seed derived from (run seed, doc id) and asks for a text
relating each, within a per-document token budget. Everything is a pure function of the document and the
params, so a restart regenerates exactly the same plan and never appends work twice.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from lmpipe.llm.types import json_format
from lmpipe.synth.config import EntiGraphConfig


# ---------------------------------------------------------------------------------- JSON request
def entity_format(cfg: EntiGraphConfig) -> str:
    """``GenRequest.response_format`` for the entity step: backends that honour it (the embedded model,
    serve-llm, OpenAI, vLLM) can only produce JSON of this shape, so the fallback is rarely needed."""
    if cfg.json_mode == "off":
        return ""
    if cfg.json_mode == "object":
        return json_format()
    schema = {
        "type": "object",
        "properties": {
            "entities": {
                "type": "array",
                "items": {"type": "string"},
                "minItems": 2,
                "maxItems": cfg.max_entities,
            },
            "summary": {"type": "string"},
        },
        "required": ["entities", "summary"],
        "additionalProperties": False,
    }
    return json_format(schema, "entities")


# ------------------------------------------------------------------------------------ JSON parsing
_FENCE = re.compile(r"```(?:json)?\s*(.*?)(?:```|$)", re.DOTALL | re.IGNORECASE)
_TRAILING_COMMA = re.compile(r",\s*([\]}])")


def _close_truncated(s: str) -> str:
    """Close an unterminated string and any open brackets of a reply that stopped mid-way."""
    stack, in_str, esc = [], False, False
    for ch in s:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            stack.append("]" if ch == "[" else "}")
        elif ch in "]}" and stack:
            stack.pop()
    out = s + ('"' if in_str else "")
    out = re.sub(r",\s*$", "", out.rstrip())
    out = re.sub(r":\s*$", ': ""', out)
    return out + "".join(reversed(stack))


def _decode_first(s: str) -> Any:
    start = min((i for i in (s.find("{"), s.find("[")) if i >= 0), default=-1)
    if start < 0:
        raise ValueError("no JSON object or array")
    value, _ = json.JSONDecoder().raw_decode(s[start:])
    return value


def loads_lenient(text: str) -> tuple[Any, bool]:
    """Parse the first JSON value in a model reply. Returns (value, repaired); raises ValueError if hopeless."""
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced else text
    try:
        return _decode_first(body), False
    except ValueError:
        pass
    fixed = body.replace("“", '"').replace("”", '"').replace("’", "'")
    if '"' not in fixed:
        fixed = fixed.replace("'", '"')
    fixed = _TRAILING_COMMA.sub(r"\1", fixed)
    start = min((i for i in (fixed.find("{"), fixed.find("[")) if i >= 0), default=-1)
    if start < 0:
        raise ValueError("no JSON object or array")
    for candidate in (fixed[start:], _close_truncated(fixed[start:])):
        try:
            return _decode_first(_TRAILING_COMMA.sub(r"\1", candidate)), True
        except ValueError:
            continue
    raise ValueError("unparseable JSON")


def _names(value: Any) -> list[str]:
    items = value if isinstance(value, list) else []
    out = []
    for it in items:
        if isinstance(it, dict):  # [{"name": ...}] is a common variant
            it = (
                it.get("name") or it.get("entity") or next((v for v in it.values() if isinstance(v, str)), "")
            )
        if isinstance(it, str | int | float):
            out.append(str(it).strip())
    return out


def parse_entities(text: str, document: str, max_entities: int) -> tuple[list[str], str, bool] | None:
    """(entities found in ``document``, summary, repaired) from a reply, or None when unusable."""
    try:
        value, repaired = loads_lenient(text)
    except ValueError:
        return None
    summary = ""
    if isinstance(value, dict):
        summary = value.get("summary") if isinstance(value.get("summary"), str) else ""
        value = value.get("entities", value.get("entity", []))
    lowered = document.lower()
    seen: set[str] = set()
    ents = []
    for name in _names(value):
        key = name.lower()
        if 1 < len(name) <= 80 and key not in seen and key in lowered:  # grounded: no invented entities
            seen.add(key)
            ents.append(name)
    if len(ents) < 2:
        return None
    return ents[:max_entities], summary.strip(), repaired


# ---------------------------------------------------------------------------- heuristic fallback
_CONNECT = r"(?:\s+(?:of|the|de|la|von|van|and|du)){0,2}"
_PHRASE = re.compile(rf"\b[A-Z][\w'’-]*(?:{_CONNECT}\s+[A-Z][\w'’-]*)*")
_YEAR = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})\b")
_STOP = frozenset(
    [
        "The",
        "A",
        "An",
        "It",
        "Its",
        "This",
        "That",
        "These",
        "Those",
        "He",
        "She",
        "They",
        "His",
        "Her",
        "Their",
        "In",
        "On",
        "At",
        "For",
        "From",
        "By",
        "With",
        "As",
        "But",
        "And",
        "Or",
        "When",
        "Where",
        "While",
        "Although",
        "Historians",
        "Based",
        "Today",
        "Many",
        "Some",
        "One",
    ]
)


def heuristic_entities(document: str, max_entities: int) -> list[str]:
    """Capitalised phrases and years, most frequent first (ties: first seen), leading articles dropped."""
    counts: Counter[str] = Counter()
    first: dict[str, int] = {}
    title = re.match(r"\s*#+\s*(.+)", document)
    text = document if not title else document[title.end() :]
    found = [(m.start(), m.group(0)) for m in _PHRASE.finditer(text)] + [
        (m.start(), m.group(0)) for m in _YEAR.finditer(text)
    ]
    cands = [c for _, c in sorted(found)]  # text order, so ties rank by first appearance
    if title:
        cands.insert(0, title.group(1).strip())
    for c in cands:
        head, _, rest = c.partition(" ")
        if head in _STOP and rest:  # 'Historians of Baesilquath' -> 'Baesilquath'
            c = re.sub(r"^(?:(?:of|the|de|la|von|van|and|du)\s+)*", "", rest)
        c = c.strip(" '’-")
        if not c or c in _STOP or len(c) < 2:
            continue
        counts[c] += 1
        first.setdefault(c, len(first))
    ranked = sorted(counts, key=lambda c: (-counts[c], first[c]))
    out: list[str] = []
    for (
        c
    ) in ranked:  # skip a phrase contained in one already chosen ('Baenrein' inside 'Baenrein Observatory')
        if not any(c.lower() in o.lower() for o in out):
            out.append(c)
        if len(out) == max_entities:
            break
    return out


# ------------------------------------------------------------------------------------------ plan
@dataclass(frozen=True, slots=True)
class Relation:
    index: int  # position in the document's plan: part of the synthetic doc id
    entities: tuple[str, ...]
    max_tokens: int

    @property
    def kind(self) -> str:
        return "pair" if len(self.entities) == 2 else "triple"


@dataclass
class Extraction:
    entities: list[str]
    summary: str = ""
    source: str = "llm"  # llm | llm_repaired | heuristic
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from any parts: stable across runs, processes and platforms."""
    return int.from_bytes(hashlib.sha256("\0".join(map(str, parts)).encode()).digest()[:4], "big") >> 1


def plan_relations(entities: list[str], doc_id: str, seed: int, cfg: EntiGraphConfig) -> list[Relation]:
    """Seeded sample of ``cfg.pairs`` pairs and ``cfg.triples`` triples, cut to the document token budget."""
    rng = random.Random(derive_seed(seed, doc_id, "entigraph-plan"))
    combos: list[tuple[str, ...]] = []
    for size, n in ((2, cfg.pairs), (3, cfg.triples)):
        pool = list(itertools.combinations(entities, size))
        combos += rng.sample(pool, min(n, len(pool)))
    plan, left = [], cfg.doc_token_budget
    for i, combo in enumerate(combos):
        tokens = min(cfg.max_tokens, left)
        if tokens < 8:  # too little left for a meaningful text
            break
        plan.append(Relation(i, combo, tokens))
        left -= tokens
    return plan


def format_entities(entities: tuple[str, ...] | list[str]) -> str:
    return ", ".join(entities[:-1]) + f" and {entities[-1]}" if len(entities) > 1 else "".join(entities)
