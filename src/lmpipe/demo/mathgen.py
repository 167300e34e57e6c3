"""Grade-school math word problems with worked, verified answers (GSM8K-style ``#### n`` ending)."""

from __future__ import annotations

import random

NAMES = ["Ada", "Bruno", "Chen", "Dalia", "Emeka", "Farah", "Goran", "Hana", "Ivo", "Jun", "Kiri", "Luca"]
ITEMS = [("apples", "basket"), ("pencils", "box"), ("stamps", "album"), ("marbles", "jar"), ("cookies", "tray")]


def problem(rng: random.Random) -> str:
    name, friend = rng.sample(NAMES, 2)
    item, holder = rng.choice(ITEMS)
    kind = rng.randrange(4)
    if kind == 0:
        a, b, c = rng.randint(3, 40), rng.randint(2, 9), rng.randint(1, 30)
        total = a + b * c
        q = f"{name} has {a} {item}. {name} buys {b} more {holder}s with {c} {item} in each. How many {item} does {name} have now?"
        steps = [f"The {holder}s hold {b} * {c} = {b * c} {item}.", f"So {name} has {a} + {b * c} = {total} {item}."]
    elif kind == 1:
        per, n, given = rng.randint(2, 12), rng.randint(3, 15), rng.randint(1, 10)
        start = per * n
        given = min(given, start - 1)
        left = start - given
        q = f"There are {n} {holder}s with {per} {item} each. {name} gives {given} {item} to {friend}. How many {item} are left?"
        steps = [f"At first there are {n} * {per} = {start} {item}.", f"After giving {given} away, {start} - {given} = {left} remain."]
        total = left
    elif kind == 2:
        price, qty, paid = rng.randint(2, 15), rng.randint(2, 8), 0
        cost = price * qty
        paid = cost + rng.randint(1, 20)
        total = paid - cost
        q = f"{name} buys {qty} {item} at ${price} each and pays with ${paid}. How much change does {name} get?"
        steps = [f"The {item} cost {qty} * {price} = ${cost}.", f"The change is {paid} - {cost} = ${total}."]
    else:
        groups, each = rng.randint(2, 9), rng.randint(2, 12)
        whole = groups * each
        q = f"{name} and {friend} share {whole} {item} equally among {groups} {holder}s. How many {item} go in each {holder}?"
        steps = [f"Each {holder} gets {whole} / {groups} = {each} {item}."]
        total = each
    return f"Question: {q}\nAnswer: " + " ".join(steps) + f"\n#### {total}"
