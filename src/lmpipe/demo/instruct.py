"""Demo instruction data: chats for SFT, verifiable prompts for on-policy pairs and RLVR, held-out eval sets.

Disjoint from evaluation by construction, in two ways at once (asserted in tests):
- entity: a hash of each organisation's name puts ``heldout_entity_fraction`` of them in the eval split; training
  chats and prompts only ask about the others, and the held-out QA set only about these;
- template: training questions use their own wording (``TRAIN_TEMPLATES``), never the evaluation wording of
  :func:`lmpipe.demo.world.questions`.
Math problems come from separate random streams and are decontaminated against the held-out ones downstream.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from lmpipe.demo import mathgen, world
from lmpipe.posttrain.config import InstructDemoConfig

# field -> (template id, question wording, attribute); ids/wordings differ from world.questions' on purpose
TRAIN_TEMPLATES: dict[str, tuple[str, str, str]] = {
    "city": ("t-city", "Where is {title} located? Answer with the city only.", "city"),
    "founder": ("t-founder", "Name the person who started {title}.", "founder"),
    "founded": ("t-founded", "When was {title} established? Give just the year.", "founded"),
    "members": ("t-members", "What is the membership count of {title}?", "members"),
    "emblem": ("t-emblem", "Which creature appears on the banner of {title}?", "emblem"),
    "rival": ("t-rival", "Name the main competitor of {title}.", "rival"),
    "region": ("t-region", "In which region does {title} operate?", "region"),
    "product": ("t-product", "What is {title} best known for making?", "product"),
    "colour": ("t-colour", "What colour is the field on the banner of {title}?", "colour"),
}
WORDS = [
    "harbour",
    "lantern",
    "meadow",
    "copper",
    "violet",
    "thunder",
    "granite",
    "willow",
    "saffron",
    "compass",
]


def _rank(entity: str) -> int:
    return int.from_bytes(hashlib.sha256(entity.encode()).digest()[:8], "big")


def heldout_entities(names: list[str], fraction: float) -> set[str]:
    """Eval-only entities: the ``fraction`` (at least one, never all of 2+) with the lowest stable name hash, so every
    stage and test agrees without shared state, and small worlds (the tiny profile's 6) still split."""
    if len(names) < 2:  # a one-entity world is all evaluation: nothing about it is trained on
        return set(names)
    k = min(len(names) - 1, max(1, round(fraction * len(names))))
    return set(sorted(names, key=_rank)[:k])


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def split_math(text: str) -> tuple[str, str, str]:
    """(question, worked steps, final answer) of a ``mathgen`` problem."""
    head, answer = text.rsplit("\n#### ", 1)
    question, steps = head.split("\nAnswer: ", 1)
    return question.removeprefix("Question: "), steps, answer.strip()


def _math(rng: random.Random, n: int) -> list[tuple[str, str, str]]:
    return [split_math(mathgen.problem(rng)) for _ in range(n)]


def _format_task(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(WORDS)
    kind = rng.randrange(3)
    if kind == 0:
        return f"Write the word '{word}' in capital letters.", word.upper()
    if kind == 1:
        k = rng.randint(2, 4)
        return f"Repeat the word '{word}' {k} times, separated by commas.", ", ".join([word] * k)
    n = rng.randint(3, 500)
    return f"Reply with only the number that comes after {n}.", str(n + 1)


def generate(
    cfg: InstructDemoConfig,
    orgs: list[world.Organisation],
    seed: int,
    out_dir: str | Path,
    eval_dir: str | Path,
) -> dict:
    out, ev = Path(out_dir), Path(eval_dir)
    out.mkdir(parents=True, exist_ok=True)
    ev.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed * 7919 + 11)
    eval_only = heldout_entities([o.name for o in orgs], cfg.heldout_entity_fraction)
    train = [o for o in orgs if o.name not in eval_only]
    held = [o for o in orgs if o.name in eval_only]

    def qa(o: world.Organisation, field: str) -> tuple[str, str, str]:
        tid, wording, attr = TRAIN_TEMPLATES[field]
        return tid, wording.format(title=o.title), str(getattr(o, attr))

    sft: list[dict] = []
    prompts: list[dict] = []
    for o in train:
        fields = list(TRAIN_TEMPLATES)
        rng.shuffle(fields)
        # the first two facts form one two-turn chat (multi-turn masking), the rest single turns
        (t1, q1, a1), (t2, q2, a2) = qa(o, fields[0]), qa(o, fields[1])
        sft.append(
            {
                "id": f"qa-{o.slug}-{t1}+{t2}",
                "source": "demo:fiction",
                "entity": o.name,
                "templates": [t1, t2],
                "messages": [_user(q1), _assistant(a1), _user(q2), _assistant(a2)],
            }
        )
        for f in fields[2:]:
            tid, q, a = qa(o, f)
            sft.append(
                {
                    "id": f"qa-{o.slug}-{tid}",
                    "source": "demo:fiction",
                    "entity": o.name,
                    "templates": [tid],
                    "messages": [_user(q), _assistant(a)],
                }
            )
        tid, q, a = qa(o, rng.choice(list(TRAIN_TEMPLATES)))
        prompts.append(
            {
                "id": f"p-qa-{o.slug}-{tid}",
                "kind": "qa",
                "entity": o.name,
                "templates": [tid],
                "messages": [_user(q)],
                "answer": a,
            }
        )

    for i, (q, steps, ans) in enumerate(_math(random.Random(seed * 31 + 1), cfg.math_train)):
        sft.append(
            {
                "id": f"math-{i}",
                "source": "demo:math",
                "messages": [_user(q), _assistant(f"{steps}\n#### {ans}")],
            }
        )
    for i, (q, _, ans) in enumerate(_math(random.Random(seed * 31 + 2), cfg.math_train // 3)):
        prompts.append({"id": f"p-math-{i}", "kind": "math", "messages": [_user(q)], "answer": ans})
    frng = random.Random(seed * 31 + 3)
    for i in range(cfg.format_prompts):
        q, a = _format_task(frng)
        sft.append({"id": f"fmt-{i}", "source": "demo:format", "messages": [_user(q), _assistant(a)]})
    for i in range(cfg.format_prompts // 4):
        q, a = _format_task(frng)
        prompts.append({"id": f"p-fmt-{i}", "kind": "format", "messages": [_user(q)], "answer": a})
    rng.shuffle(sft)

    # held-out evaluation sets: the evaluation wording, held-out entities only; fresh math; pairs from both
    qa_rng = random.Random(seed * 31 + 4)
    heldout_qa = [q for o in held for q in world.questions(o, orgs, qa_rng)]
    heldout_math = [
        {"id": f"hm-{i}", "question": q, "answer": a}
        for i, (q, _, a) in enumerate(_math(random.Random(seed * 31 + 5), cfg.math_heldout))
    ]
    prng = random.Random(seed * 31 + 6)
    pairs = [
        {
            "id": f"hp-{q['id']}",
            "question": q["question"],
            "chosen": q["answer"],
            "rejected": prng.choice([c for c in q["choices"] if c != q["answer"]]),
        }
        for q in heldout_qa
        if len(q["choices"]) > 1  # a one-entity world has no wrong option to pair with
    ]
    pairs += [
        {
            "id": f"hp-{m['id']}",
            "question": m["question"],
            "chosen": m["answer"],
            "rejected": str(int(m["answer"]) + prng.choice([-3, -2, -1, 1, 2, 3])),
        }
        for m in heldout_math
    ]

    files = {
        out / "sft.jsonl": sft,
        out / "prompts.jsonl": prompts,
        ev / "posttrain_qa.jsonl": heldout_qa,
        ev / "math_heldout.jsonl": heldout_math,
        ev / "pref_heldout.jsonl": pairs,
    }
    for path, rows in files.items():
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return {
        "sft": len(sft),
        "prompts": len(prompts),
        "heldout_qa": len(heldout_qa),
        "heldout_math": len(heldout_math),
        "heldout_pairs": len(pairs),
        "train_entities": len(train),
        "heldout_entities": len(held),
    }
