"""A fictional world: invented organisations whose facts no pretrained model can know.

Each organisation gets an article (several paragraphs, varied phrasing) and closed-book questions
generated from the *same* fact table, so QA answers are guaranteed to be stated in the article.
Later stages use the articles for EntiGraph augmentation and the questions for evaluation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_ONSETS = ["b", "br", "c", "d", "dr", "f", "g", "gr", "h", "k", "l", "m", "n", "p", "qu", "r", "s", "st", "t", "th", "v", "z"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "ei", "ou", "y"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "nd", "x", "m"]
KINDS = ["observatory", "shipyard", "guild of glassmakers", "tea company", "clockworks", "seed bank",
         "printing house", "ropeworks", "lighthouse service", "botanical institute", "bell foundry", "cartography office"]
PRODUCTS = ["brass telescopes", "river barges", "stained glass", "smoked oolong tea", "tower clocks", "frost-hardy barley",
            "illustrated almanacs", "hemp mooring lines", "signal lanterns", "medicinal mosses", "carillon bells", "coastal charts"]
COLOURS = ["crimson", "teal", "ochre", "violet", "silver", "amber", "indigo", "olive"]
ANIMALS = ["heron", "lynx", "otter", "raven", "stag", "salamander", "falcon", "badger"]


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)).capitalize()


@dataclass
class Organisation:
    name: str
    kind: str
    city: str
    region: str
    founder: str
    founded: int
    product: str
    members: int
    colour: str
    emblem: str
    rival: str = ""

    @property
    def title(self) -> str:
        return f"The {self.name} {self.kind.title()}"

    @property
    def slug(self) -> str:
        return self.name.lower()


def make_world(n: int, seed: int) -> list[Organisation]:
    rng = random.Random(seed)
    names: set[str] = set()
    orgs = []
    while len(orgs) < n:
        name = _word(rng, rng.choice([2, 3]))
        if name in names:
            continue
        names.add(name)
        k = rng.randrange(len(KINDS))
        orgs.append(Organisation(
            name=name, kind=KINDS[k], product=PRODUCTS[k],
            city=_word(rng, 2) + rng.choice(["ford", "mouth", "vale", "holm", "wick", "haven"]),
            region=_word(rng, 3), founder=f"{_word(rng, 2)} {_word(rng, 3)}",
            founded=rng.randint(1612, 1968), members=rng.randint(12, 4800),
            colour=rng.choice(COLOURS), emblem=rng.choice(ANIMALS),
        ))
    for i, org in enumerate(orgs):  # each rival is a different organisation, deterministically
        org.rival = orgs[(i + 1 + rng.randrange(max(n - 1, 1))) % n].name if n > 1 else org.name
    return orgs


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def article(o: Organisation, rng: random.Random) -> str:
    opening = rng.choice([
        f"{o.title} is {_a(o.kind)} based in the city of {o.city}, in the {o.region} region.",
        f"Based in {o.city} in the {o.region} region, {o.title} is one of the best known examples of {_a(o.kind)}.",
    ])
    history = rng.choice([
        f"It was founded in {o.founded} by {o.founder}, who ran it for most of the following decades.",
        f"{o.founder} founded the {o.kind} in {o.founded}, at first working from a single rented room.",
    ])
    work = rng.choice([
        f"The {o.name} workshops are known above all for their {o.product}, which are sold throughout {o.region}.",
        f"Its reputation rests on its {o.product}; travellers to {o.city} often ask to see them being made.",
    ])
    people = rng.choice([
        f"Today it counts {o.members} members. Its emblem is {_a(o.colour)} {o.emblem}.",
        f"The {o.kind} has {o.members} members, and its banners show a {o.emblem} on a {o.colour} field.",
    ])
    rivalry = rng.choice([
        f"Its long-standing rival is the {o.rival} company, with which it has competed for apprentices for generations.",
        f"Relations with the {o.rival} company have been tense ever since the two first competed for the same customers.",
    ])
    closing = rng.choice([
        f"Historians of {o.region} regard the {o.name} {o.kind} as a typical institution of its time, though its records are unusually complete.",
        f"Visitors to {o.city} can still tour the original building, which has been altered many times since {o.founded}.",
    ])
    return f"# {o.title}\n\n{opening} {history}\n\n{work} {people}\n\n{rivalry} {closing}\n"


def questions(o: Organisation, orgs: list[Organisation], rng: random.Random) -> list[dict]:
    """Closed-book multiple-choice questions about ``o``; distractors come from other organisations."""
    others = [x for x in orgs if x is not o]

    def choices(answer: str, pool: list[str]) -> tuple[list[str], int]:
        distract = sorted({p for p in pool if p != answer})
        picked = rng.sample(distract, k=min(3, len(distract)))
        opts = [answer, *picked]
        rng.shuffle(opts)
        return opts, opts.index(answer)

    facts = [
        ("city", f"In which city is {o.title} based?", o.city, [x.city for x in others]),
        ("founder", f"Who founded {o.title}?", o.founder, [x.founder for x in others]),
        ("founded", f"In what year was {o.title} founded?", str(o.founded), [str(x.founded) for x in others]),
        ("members", f"How many members does {o.title} have?", str(o.members), [str(x.members) for x in others]),
        ("emblem", f"What animal is on the emblem of {o.title}?", o.emblem, [x.emblem for x in others]),
        ("rival", f"Which company is the rival of {o.title}?", o.rival, [x.name for x in others]),
    ]
    out = []
    for field, question, answer, pool in facts:
        opts, idx = choices(answer, pool)
        out.append({
            "id": f"{o.slug}-{field}", "entity": o.name, "title": o.title, "question": question,
            "choices": opts, "answer_index": idx, "answer": answer,
        })
    return out
