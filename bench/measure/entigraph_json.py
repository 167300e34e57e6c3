"""EntiGraph's entity step on the default model (SmolLM2-135M, embedded): how often the entities come from
the model's JSON rather than the heuristic fallback, for each ``augment.entigraph.json_mode``.

'off' is the prompt alone (the old behaviour), 'object' constrains decoding to any JSON object, 'schema' to
the entities + summary schema. Inputs: demo fiction articles (``lmpipe.demo.world``), the entity step as
``augment`` runs it (``ShardAugmenter.extract``, params from params.yaml), one run per seed. Reported per
mode: the fraction of replies that parse as JSON as they stand (``strict_json_fraction``) and the fraction
of documents whose entities came from the model (``from_model_fraction``: parsed, >= 2 entities found
verbatim in the document), the rest falling back to the heuristic extractor.

Writes ``bench/measure/entigraph_json.json``. Usage: ``python -m bench.measure.entigraph_json [--docs 8 --seeds 2]``.
A measurement with no peer to compare with, so it is not one of the ``bench/*.py`` comparisons.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections import Counter
from pathlib import Path

import torch

from bench._common import ROOT, machine
from lmpipe.config import load_params
from lmpipe.demo.world import article, make_world
from lmpipe.documents import Document
from lmpipe.llm.embedded import EmbeddedBackend
from lmpipe.synth.augment import AugmentJob, ShardAugmenter, _Work

MODES = ("off", "object", "schema")


def _keep(out: object, raw: list[str]) -> object:
    raw.append(getattr(out, "text", ""))
    return out


def _strict_json(text: str) -> bool:
    """The reply parses as it stands (no repair) into an object holding an entities list."""
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return isinstance(value, dict) and isinstance(value.get("entities"), list)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    p = load_params(ROOT / "params.yaml")
    rng = random.Random(0)
    docs = [
        Document(f"org-{i}", article(o, rng), "fiction", "demo")
        for i, o in enumerate(make_world(args.docs, 0))
    ]
    backend = EmbeddedBackend("smollm2", threads=1, batch_size=p.llm.batch_size)
    rows = {}
    for mode in MODES:
        aug = p.augment.model_copy(
            update={
                "entigraph": p.augment.entigraph.model_copy(update={"json_mode": mode, "json_attempts": 1})
            }
        )
        per_seed, seconds, examples, strict = [], [], [], []
        for seed in range(args.seeds):
            raw: list[str] = []
            real = backend.generate
            backend.generate = lambda reqs, real=real, raw=raw: [_keep(o, raw) for o in real(reqs)]  # type: ignore[method-assign]
            job = AugmentJob(llm=p.llm.model_copy(update={"cache": None}), augment=aug, seed=seed)
            works = [_Work(d, entigraph=True, thought=False) for d in docs]
            t0 = time.perf_counter()
            ShardAugmenter(job, backend).extract(works)
            seconds.append(time.perf_counter() - t0)
            backend.generate = real  # type: ignore[method-assign]
            strict.append(sum(_strict_json(t) for t in raw) / len(raw))
            sources = Counter(w.extraction.source for w in works if w.extraction)
            per_seed.append(dict(sources))
            if seed == 0:
                examples = [w.extraction.entities for w in works[:2] if w.extraction]
        from_model = [(s.get("llm", 0) + s.get("llm_repaired", 0)) / len(docs) for s in per_seed]
        rows[mode] = {
            "strict_json_fraction": {"median": statistics.median(strict), "min": min(strict), "max": max(strict)},
            "from_model_fraction": {"median": statistics.median(from_model), "min": min(from_model),
                                    "max": max(from_model)},
            "sources_per_seed": per_seed,
            "seconds": {"median": round(statistics.median(seconds), 1), "min": round(min(seconds), 1),
                        "max": round(max(seconds), 1)},
            "examples_seed0": examples,
        }  # fmt: skip
        print(
            mode, rows[mode]["strict_json_fraction"], rows[mode]["from_model_fraction"], per_seed, flush=True
        )
    write_json(
        {
            "model": backend.model_id,
            "docs": args.docs,
            "seeds": args.seeds,
            "entity_tokens": p.augment.entigraph.entity_tokens,
            "temperature": p.augment.temperature,
            "modes": rows,
        },
    )


def write_json(result: dict) -> None:
    out = Path(__file__).with_suffix(".json")
    out.write_text(json.dumps({"benchmark": "entigraph_json", "machine": machine(), **result}, indent=1) + "\n")
    print(out)


if __name__ == "__main__":
    main()
