"""The held-out sample drawn before filtering (``ingest.holdout``), through the real stages: membership against
the hash rule recomputed here with hashlib, conservation (in = kept + rejected + held out), and its clean part
(what the filter keeps) against documents built to pass or fail a rule."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from lmpipe.config import IngestConfig
from lmpipe.contract import run_stage
from lmpipe.documents import iter_batches, iter_documents
from lmpipe.executors import LocalExecutor
from lmpipe.ingest import ingest
from stages.registry import by_name

GOOD = (
    "The river {i} flows past the old mill, and the farmers of the valley gather there to trade grain with "
    "the merchants who come from the coast every spring. They talk about the weather and the price of bread "
    "while their children play near the water. Write to clerk{i}@example.org for the market dates."
)
BAD = "Cheap deal {i} now."  # 4 words: below the rule's 20


def expected_held(doc_id: str, fraction: float, seed: int) -> bool:
    # the documented rule, computed independently: keyed BLAKE2b of "<seed>\0<id>" as a uniform number in [0, 1)
    person = b"lmpipe/holdout".ljust(16, b"\0")
    digest = hashlib.blake2b(f"{seed}\0{doc_id}".encode(), digest_size=8, person=person).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def write_corpus(raw: Path, n: int = 40) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    prose = [{"text": (GOOD if i % 2 == 0 else BAD).format(i=i), "good": i % 2 == 0} for i in range(n)]
    (raw / "prose.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prose))
    code = [{"text": f"def f{i}(x):\n    return x + {i}\n"} for i in range(n)]
    (raw / "code.jsonl").write_text("".join(json.dumps(r) + "\n" for r in code))


def sources(raw: Path) -> list[dict]:
    return [
        {"uri": str(raw / "prose.jsonl"), "domain": "prose"},
        {"uri": str(raw / "code.jsonl"), "domain": "code"},
    ]


def ids(directory: Path) -> dict[str, str]:
    return {d.id: d.text for d in iter_documents(directory)}


def test_membership_follows_the_hash_rule_per_domain_and_counts_are_conserved(tmp_path: Path) -> None:
    write_corpus(tmp_path / "raw")
    cfg = IngestConfig(
        sources=sources(tmp_path / "raw"), holdout={"fraction": 0.4, "domains": {"code": 0.0}, "seed": 3}
    )
    stats = ingest(cfg, tmp_path / "docs", tmp_path / "rej", LocalExecutor(1), tmp_path / "held")
    kept, held = ids(tmp_path / "docs"), ids(tmp_path / "held")
    domains = {d.id: d.domain for p in ("docs", "held") for d in iter_documents(tmp_path / p)}
    everything = kept.keys() | held.keys()
    assert len(everything) == 80 and not kept.keys() & held.keys()
    want = {i for i in everything if domains[i] == "prose" and expected_held(i, 0.4, 3)}
    assert held.keys() == want and 5 <= len(want) <= 30  # about 40 % of 40 prose docs, none of the code
    assert stats["in"] == 80 == stats["kept"] + stats["rejected"] + stats["held"]
    assert stats["held_by_domain"] == {"prose": len(want)} and "held out" in stats["conservation"]
    # another seed draws another sample; no held-out dir: nothing is held out
    other = ingest(
        cfg.model_copy(update={"holdout": cfg.holdout.model_copy(update={"seed": 4})}),
        tmp_path / "d2",
        tmp_path / "r2",
        LocalExecutor(1),
        tmp_path / "h2",
    )
    assert ids(tmp_path / "h2").keys() != held.keys() and other["held"] > 0
    assert ingest(cfg, tmp_path / "d3", tmp_path / "r3", LocalExecutor(1))["kept"] == 80


def test_clean_part_is_what_the_filter_keeps_through_the_stages(tmp_path: Path) -> None:
    write_corpus(tmp_path / "raw")
    off = {
        k: None for k in ("encoding", "language", "gopher_repetition", "c4", "fineweb", "toxicity", "quality")
    }
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "run": {"executor": {"workers": 1}},
                "ingest": {"sources": sources(tmp_path / "raw"), "holdout": {"fraction": 0.5, "domains": {}}},
                "filter": {"select": {"default": {**off, "gopher_quality": {"min_words": 20}}}},
            }
        )
    )
    for stage in ("ingest", "score", "filter"):
        s = by_name()[stage]
        paths = {k: str(tmp_path / v) for k, v in s.io().items()}
        stats = run_stage(stage, s.entry, paths, str(params), str(tmp_path / "metrics" / f"{stage}.json"))
        if stage == "ingest":
            assert (
                stats["gate"]["success"] and stats["in"] == stats["kept"] + stats["rejected"] + stats["held"]
            )
    raw = {d.id: d for d in iter_documents(tmp_path / "data/heldout_raw/docs")}
    clean = {d.id: d for d in iter_documents(tmp_path / "data/heldout_clean/docs")}
    dropped = {
        i: r
        for b in iter_batches(tmp_path / "data/heldout_clean/rejected", ["id", "reason"])
        for i, r in zip(b.column("id").to_pylist(), b.column("reason").to_pylist(), strict=True)
    }
    good = {i for i, d in raw.items() if d.domain == "prose" and "river" in d.text}
    bad_prose = {i for i, d in raw.items() if d.domain == "prose" and "Cheap deal" in d.text}
    assert good and bad_prose  # the sample holds documents of both kinds
    assert clean.keys() == good  # every short doc fails the rule; code is not prose and fails it too
    assert {dropped[i] for i in bad_prose} == {"gopher_quality"} and dropped.keys() == raw.keys() - good
    assert all(
        "<EMAIL>" in clean[i].text and "@example.org" in raw[i].text for i in good
    )  # the filter's scrub
    # the held-out documents never reached the training side of score / filter
    trained = ids(tmp_path / "data/scored/docs").keys() | ids(tmp_path / "data/filtered/docs").keys()
    assert not trained & raw.keys()
    f = json.loads((tmp_path / "metrics/filter.json").read_text())["heldout"]
    assert (f["in"], f["clean"], f["rejected"]) == (len(raw), len(good), len(raw) - len(good))
    # a no-filter arm (filter.select.bypass) trains on every document, yet its clean held-out part is the same
    raw_params = yaml.safe_load(params.read_text())
    raw_params["filter"]["select"]["bypass"] = True
    raw_params["gates"] = {"enabled": False}  # the ingest gate above already saw the held-out counts
    params.write_text(yaml.safe_dump(raw_params))
    s = by_name()["filter"]
    stats = run_stage(
        "filter",
        s.entry,
        {k: str(tmp_path / v) for k, v in s.io().items()},
        str(params),
        str(tmp_path / "metrics" / "filter_raw.json"),
    )
    assert stats["rejected"] == 0 and stats["kept"] == stats["in"] > 0
    assert ids(tmp_path / "data/filtered/docs") == ids(tmp_path / "data/scored/docs")  # not even scrubbed
    assert ids(tmp_path / "data/heldout_clean/docs") == {i: d.text for i, d in clean.items()}


@pytest.mark.parametrize("bad", [{"fraction": 1.0}, {"domains": {"web": -0.1}}])
def test_invalid_fractions_fail_validation(bad: dict) -> None:
    with pytest.raises(ValueError):
        IngestConfig(sources=[{"uri": "x", "domain": "prose"}], holdout=bad)
