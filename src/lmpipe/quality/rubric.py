"""The rubric: one prompt per document asking for a 0–5 score on every dimension, and the reply's parser.

Templates are editable text files (``prompts/rate.txt`` frames the request, ``prompts/dim_<name>.txt``
describes one dimension); a ``prompts_dir`` overrides them file by file. A reply must hold one JSON object
with a whole number 0..5 for each dimension; anything else is a :class:`RubricError` whose ``reason`` the
label stage quarantines under, never an exception that stops the stage.
"""

from __future__ import annotations

from pathlib import Path

from lmpipe.llm.types import json_format
from lmpipe.synth.entigraph import loads_lenient
from lmpipe.synth.prompts import fill, load_template

PACKAGED = Path(__file__).parent / "prompts"
LOW, HIGH = 0, 5


class RubricError(ValueError):
    """A reply that is not a usable rating; ``reason`` is the quarantine reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def load_prompt(dimensions: list[str], prompts_dir: str | None = None) -> str:
    """The rating template with the dimensions' rubric and the reply's shape filled in ({document} left)."""
    rubric = "\n".join(f"- {load_template(f'dim_{d}', prompts_dir, PACKAGED)}" for d in dimensions)
    # the shape without values: a small model copies an example's numbers into every answer
    example = "{" + ", ".join(f'"{d}": <0-5>' for d in dimensions) + "}"
    return fill(
        load_template("rate", prompts_dir, PACKAGED), rubric=rubric, example=example, document="{document}"
    )


def response_format(dimensions: list[str], mode: str) -> str:
    """``GenRequest.response_format``: with ``schema`` the model can only write one integer 0..5 per dimension."""
    if mode == "off":
        return ""
    if mode == "object":
        return json_format()
    score = {"type": "integer", "enum": list(range(LOW, HIGH + 1))}
    schema = {
        "type": "object",
        "properties": {d: score for d in dimensions},
        "required": list(dimensions),
        "additionalProperties": False,
    }
    return json_format(schema, "rating")


def _whole(value: object) -> int | None:
    """A whole number from an int, an integral float or a digit string ("4", "4/5" is not)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def parse_rating(text: str, dimensions: list[str]) -> dict[str, int]:
    """``{dimension: 0..5}`` from a reply (code fences, trailing commas and a cut-off end are repaired)."""
    try:
        value, _ = loads_lenient(text)
    except ValueError:
        raise RubricError("no_json", f"no JSON object in {text[:120]!r}") from None
    if not isinstance(value, dict):
        raise RubricError("not_object", f"JSON {type(value).__name__}, not an object: {text[:120]!r}")
    lowered = {str(k).strip().lower(): v for k, v in value.items()}
    missing = [d for d in dimensions if d not in lowered]
    if missing:
        raise RubricError("missing_dimension", f"no score for {missing} in {text[:120]!r}")
    out: dict[str, int] = {}
    for d in dimensions:
        v = _whole(lowered[d])
        if v is None:
            raise RubricError("bad_score", f"{d}={lowered[d]!r} is not a whole number")
        if not LOW <= v <= HIGH:
            raise RubricError("out_of_range", f"{d}={v} outside {LOW}..{HIGH}")
        out[d] = v
    return out
