"""GSM8K-style word problems with small integers and a checkable final answer.

Why so small: the demonstrations must be learnable by a 135M model on CPU, so every
number (operands, intermediate results, answer) stays below 200 and each
demonstration is one short equation per step followed by "The answer is N.", the
line the final_answer check (last number in the text) reads.
"""

from __future__ import annotations

import random
from typing import Callable

Item = tuple[str, str, list[dict]]

NAMES = (("Mia", "she"), ("Tom", "he"), ("Ava", "she"), ("Leo", "he"), ("Zoe", "she"),
         ("Sam", "he"), ("Nina", "she"), ("Omar", "he"), ("Lena", "she"), ("Ravi", "he"),
         ("Emma", "she"), ("Kai", "he"), ("Ines", "she"), ("Ben", "he"))
OBJECTS = ("apples", "pencils", "stickers", "marbles", "cookies", "books", "stamps",
           "shells", "coins", "cards", "buttons", "balloons")
PRICED = ("notebook", "ticket", "sandwich", "toy car", "pen", "mug")


def _solution(steps: list[tuple[int, str, int, int]]) -> tuple[str, int]:
    """Render (a, op, b, result) steps as "a op b = r." sentences plus the answer line."""
    text = " ".join(f"{a} {op} {b} = {r}." for a, op, b, r in steps)
    answer = steps[-1][3]
    return f"{text} The answer is {answer}.", answer


def _people(rng: random.Random) -> tuple[str, str, str]:
    """Two distinct names and the first one's pronoun."""
    (n1, pron), (n2, _) = rng.sample(NAMES, 2)
    return n1, pron, n2


def _item(prompt: str, steps: list[tuple[int, str, int, int]]) -> Item:
    response, answer = _solution(steps)
    return prompt, response, [{"kind": "final_answer", "value": answer}]


# ---- one step (group "prompt") -------------------------------------------------

def add_sub(rng: random.Random) -> Item:
    """One addition or subtraction, four phrasings."""
    name, pron, other = _people(rng)
    obj = rng.choice(OBJECTS)
    a, b = rng.randint(10, 99), rng.randint(2, 60)
    form = rng.randrange(4)
    if form == 0:
        prompt = (f"{name} has {a} {obj}. {pron.capitalize()} gets {b} more. "
                  f"How many {obj} does {pron} have now?")
        return _item(prompt, [(a, "+", b, a + b)])
    if form == 1:
        b = rng.randint(1, a - 1)
        prompt = f"{name} had {a} {obj} and gave {b} to a friend. How many {obj} are left?"
        return _item(prompt, [(a, "-", b, a - b)])
    if form == 2:
        prompt = (f"{name} has {a} {obj} and {other} has {b}. "
                  f"How many {obj} do they have together?")
        return _item(prompt, [(a, "+", b, a + b)])
    b = rng.randint(1, a - 1)
    prompt = f"{name} has {a} {obj}. {other} has {b}. How many more {obj} does {name} have?"
    return _item(prompt, [(a, "-", b, a - b)])


# ---- two steps (group "core") --------------------------------------------------

def two_step(rng: random.Random) -> Item:
    """Two chained operations (+/-, or a product then +/-), four phrasings."""
    name, pron, _ = _people(rng)
    obj, cap = rng.choice(OBJECTS), pron.capitalize()
    form = rng.randrange(4)
    if form == 0:
        a, b = rng.randint(5, 90), rng.randint(2, 60)
        c = rng.randint(1, a + b - 1)
        prompt = (f"{name} has {a} {obj}. {cap} buys {b} more and then gives away {c}. "
                  f"How many {obj} does {pron} have now?")
        return _item(prompt, [(a, "+", b, a + b), (a + b, "-", c, a + b - c)])
    a, b = rng.randint(2, 9), rng.randint(2, 12)
    if form == 1:
        c = rng.randint(1, 60)
        prompt = (f"{name} buys {a} bags with {b} {obj} in each bag. {cap} also finds {c} "
                  f"more {obj}. How many {obj} does {pron} have?")
        return _item(prompt, [(a, "*", b, a * b), (a * b, "+", c, a * b + c)])
    if form == 2:
        c = rng.randint(1, a * b - 1)
        prompt = (f"{name} has {a} boxes of {b} {obj} each. {cap} gives {c} {obj} away. "
                  f"How many {obj} are left?")
        return _item(prompt, [(a, "*", b, a * b), (a * b, "-", c, a * b - c)])
    thing = rng.choice(PRICED)
    c = rng.randint(a * b, 150)
    prompt = (f"Each {thing} costs {b} dollars. {name} buys {a} of them and pays with {c} "
              f"dollars. How much change does {pron} get?")
    return _item(prompt, [(a, "*", b, a * b), (c, "-", a * b, c - a * b)])


# ---- three steps (group "heldout") ---------------------------------------------

def three_step(rng: random.Random) -> Item:
    """Three chained operations, three phrasings."""
    name, pron, _ = _people(rng)
    obj, cap = rng.choice(OBJECTS), pron.capitalize()
    form = rng.randrange(3)
    if form == 0:
        a, b, c = rng.randint(2, 9), rng.randint(2, 12), rng.randint(1, 50)
        s1, s2 = a * b, a * b + c
        d = rng.randint(1, s2 - 1)
        prompt = (f"{name} has {a} boxes with {b} {obj} each. {cap} finds {c} more {obj} "
                  f"and then gives {d} away. How many {obj} does {pron} have now?")
        return _item(prompt, [(a, "*", b, s1), (s1, "+", c, s2), (s2, "-", d, s2 - d)])
    if form == 1:
        a, b, c = rng.randint(5, 50), rng.randint(5, 50), rng.randint(5, 50)
        d = rng.randint(1, a + b + c - 1)
        prompt = (f"{name} collects {a} {obj} on Monday, {b} on Tuesday and {c} on Wednesday. "
                  f"{cap} gives away {d}. How many {obj} are left?")
        return _item(prompt, [(a, "+", b, a + b), (a + b, "+", c, a + b + c),
                              (a + b + c, "-", d, a + b + c - d)])
    a, b, c, d = (rng.randint(2, 9) for _ in range(4))
    prompt = (f"{name} buys {a} packs of {b} {obj} and {c} packs of {d} {obj}. "
              f"How many {obj} does {pron} have in total?")
    return _item(prompt, [(a, "*", b, a * b), (c, "*", d, c * d), (a * b, "+", c * d, a * b + c * d)])


# ---- four steps (group "heldout") ----------------------------------------------

def four_step(rng: random.Random) -> Item:
    """Four chained operations in the demonstrated one-equation-per-step format, three phrasings.

    Why: a longer chain of the very steps the two-step demonstrations show is arithmetic
    where imitating the SFT model's format is what solving looks like, so the coherent
    reward has something to pull toward out of domain. Operand ranges keep every
    intermediate result below 200, like the other families.
    """
    name, pron, _ = _people(rng)
    obj, cap = rng.choice(OBJECTS), pron.capitalize()
    form = rng.randrange(3)
    if form == 0:
        a, b, c = rng.randint(2, 9), rng.randint(2, 12), rng.randint(1, 40)
        s1, s2 = a * b, a * b + c
        d = rng.randint(1, s2 - 1)
        e = rng.randint(1, 40)
        prompt = (f"{name} has {a} boxes with {b} {obj} each. {cap} finds {c} more {obj}, gives {d} "
                  f"away and then buys {e} more. How many {obj} does {pron} have now?")
        return _item(prompt, [(a, "*", b, s1), (s1, "+", c, s2), (s2, "-", d, s2 - d),
                              (s2 - d, "+", e, s2 - d + e)])
    if form == 1:
        a, b, c, d = (rng.randint(5, 40) for _ in range(4))
        total = a + b + c + d
        e = rng.randint(1, total - 1)
        prompt = (f"{name} collects {a} {obj} on Monday, {b} on Tuesday, {c} on Wednesday and {d} "
                  f"on Thursday. {cap} gives away {e}. How many {obj} are left?")
        return _item(prompt, [(a, "+", b, a + b), (a + b, "+", c, a + b + c), (a + b + c, "+", d, total),
                              (total, "-", e, total - e)])
    a, b, c, d = (rng.randint(2, 9) for _ in range(4))
    total = a * b + c * d
    e = rng.randint(1, total - 1)
    prompt = (f"{name} buys {a} packs of {b} {obj} and {c} packs of {d} {obj}. {cap} gives {e} "
              f"away. How many {obj} are left?")
    return _item(prompt, [(a, "*", b, a * b), (c, "*", d, c * d), (a * b, "+", c * d, total),
                          (total, "-", e, total - e)])


GENERATORS: dict[str, Callable[[random.Random], Item]] = {
    "arithmetic_add_sub": add_sub,
    "arithmetic_two_step": two_step,
    "arithmetic_three_step": three_step,
    "arithmetic_four_step": four_step,
}
