"""Family registry and generators of the verifiable instruction testbed.

Why: the embedded default trains on data it generates itself, deterministically from
a seed. A family is one kind of instruction (a constraint, or a combination, or an
arithmetic word problem) whose responses an exact checker can judge, and whose
expert demonstration is produced programmatically so it passes by construction.
Each family has two labels:

- its split group, mirroring the SRPPO data setups: "core" (SFT demonstrations),
  "prompt" (the PPO prompt pool), "heldout" (evaluation only);
- its report group, saying what its score measures. The coherent reward
  r = log p_SFT(y|x) - log p_PT(y|x) pays for resembling the SFT model, so it can
  only help out of domain where doing what the demonstrations showed is compliance.
  "in_domain": the demonstrated constraints; "compositional": out-of-domain transfer
  families built from demonstrated behaviour (unseen combinations of demonstrated
  constraints, demonstrated constraints on new task types, paraphrased
  instructions); "control": constraints the demonstrations never show, where the
  reward has nothing to pull toward; "arithmetic": every word-problem family.
"""

from __future__ import annotations

import random
from typing import Callable, NamedTuple

from .arithmetic import GENERATORS as ARITHMETIC
from .checks import count_words
from .content import TOPICS, Topic, keyword_candidates

Item = tuple[str, str, list[dict]]  # (prompt, expert response, check specs)

TASKS = ("Describe {t} in one sentence.", "Tell me one fact about {t}.",
         "What is one thing you know about {t}?", "Share a short fact about {t}.",
         "Write one sentence about {t}.")
LIST_TASKS = ("List {n} facts about {t}.", "Give {n} short facts about {t}.",
              "Name {n} things you know about {t}.", "Tell me {n} things about {t}.")
TWO_TASKS = ("Tell me two facts about {t}.", "Describe {t} in two sentences.",
             "Write two short sentences about {t}.")
# A question-answer task type no demonstration uses (the demos use TASKS).
QA_TASKS = ("Question: what is something true about {t}?", "Quiz question: what do you know about {t}?",
            "Here is a question for you. What can you say about {t}?",
            "Q: What should a curious child learn about {t}?")
NUMBER_WORDS = {2: "two", 3: "three"}

UPPER = ("Write your entire answer in capital letters.",
         "Your whole response must be in uppercase letters.",
         "Use only capital letters in your answer.")
LOWER = ("Write your entire answer in lowercase letters.",
         "Do not use any capital letters in your answer.",
         "Your whole response must be in lowercase.")
KEYWORD = ('Include the word "{k}" in your answer.', 'Make sure to use the word "{k}".',
           'Your answer must contain the word "{k}".')
END = ('End your answer with the exact phrase "{p}"', 'Finish your response with "{p}"',
       'Your answer must end with the phrase "{p}"')
START = ('Start your answer with "{p}".', 'Begin your response with the words "{p}".',
         'Your answer must begin with "{p}".')
BULLETS = ('Use exactly {n} bullet points that start with "- ".',
           "Format your answer as a list of exactly {n} bullet points.",
           "Answer with exactly {n} markdown bullet points.")
QUOTE = ("Wrap your entire answer in double quotation marks.",
         "Put your whole response inside double quotes.",
         "Enclose your entire answer in double quotes.")
TITLE = ("Give your answer a title wrapped in double angular brackets, such as <<my title>>.",
         "Include a title in double angular brackets like <<title>>.",
         "Begin with a title inside double angular brackets, for example <<a title>>.")
# Paraphrases of the demonstrated case and ending instructions: no wording here occurs
# in UPPER, LOWER or END, so only the demonstrated behaviour (not the sentence) transfers.
PARA_UPPER = ("Reply in all caps.", "Type every letter of your reply as a capital.",
              "Shout your reply so that no small letters appear.",
              "Make each letter you write a capital one.")
PARA_LOWER = ("Reply in all small letters.", "Keep every letter of your reply small.",
              "Type your reply as if the shift key were broken.",
              "No capitals anywhere in your reply, please.")
PARA_END = ('Close your reply with "{p}"', 'The last words of your reply should be "{p}"',
            'Sign off with "{p}"', 'Let "{p}" be the final words you write.')
LOWER_KEYWORD_LIMIT = ('Use only lowercase letters, include the word "{k}", and use at most {n} words.',
                       'Answer in lowercase with at most {n} words and include the word "{k}".',
                       'Write in lowercase only, mention "{k}", and stay within {n} words.')

END_PHRASES = ("Anything else I can help with?", "Hope this helps.", "That is all.",
               "Thanks for asking.", "Any other questions?")
START_PHRASES = ("Here is a fact:", "Fun fact:", "Sure thing:", "Quick answer:", "Did you know?")
TITLE_PATTERNS = ("{T}", "All About {T}", "Facts About {T}")
WORD_LIMITS = (8, 10, 12, 15, 20)


class Family(NamedTuple):
    """Registry entry: id prefix, split group, generator rng -> (prompt, response, checks), report group."""

    prefix: str
    group: str
    generate: Callable[[random.Random], Item]
    report: str


# ---- shared helpers ----------------------------------------------------------

def _fact(rng: random.Random) -> tuple[Topic, str]:
    """A random topic and one of its facts."""
    topic = rng.choice(TOPICS)
    return topic, rng.choice(topic.facts)


def _join(rng: random.Random, task: str, *constraints: str) -> str:
    """Put the constraint sentences (shuffled) before or after the task, for variety."""
    parts = list(constraints)
    rng.shuffle(parts)
    return " ".join([task, *parts] if rng.random() < 0.5 else [*parts, task])


def _task(rng: random.Random, topic: Topic) -> str:
    return rng.choice(TASKS).format(t=topic.name)


def _keyword(rng: random.Random, fact: str) -> str:
    return rng.choice(keyword_candidates(fact))


def _limit(rng: random.Random, text: str) -> int:
    """A word limit the given demonstration text respects."""
    words = count_words(text)
    return rng.choice([n for n in WORD_LIMITS if n >= words])


# ---- group "core" --------------------------------------------------------------

def gen_uppercase(rng: random.Random) -> Item:
    topic, fact = _fact(rng)
    prompt = _join(rng, _task(rng, topic), rng.choice(UPPER))
    return prompt, fact.upper(), [{"kind": "uppercase"}]


def gen_lowercase(rng: random.Random) -> Item:
    topic, fact = _fact(rng)
    prompt = _join(rng, _task(rng, topic), rng.choice(LOWER))
    return prompt, fact.lower(), [{"kind": "lowercase"}]


def gen_include_keyword(rng: random.Random) -> Item:
    topic, fact = _fact(rng)
    keyword = _keyword(rng, fact)
    prompt = _join(rng, _task(rng, topic), rng.choice(KEYWORD).format(k=keyword))
    return prompt, fact, [{"kind": "include_keyword", "keyword": keyword}]


def gen_end_phrase(rng: random.Random) -> Item:
    topic, fact = _fact(rng)
    phrase = rng.choice(END_PHRASES)
    prompt = _join(rng, _task(rng, topic), rng.choice(END).format(p=phrase))
    return prompt, f"{fact} {phrase}", [{"kind": "end_phrase", "phrase": phrase}]


# ---- controls: constraints no demonstration shows --------------------------------

def gen_bullet_list(rng: random.Random) -> Item:
    topic = rng.choice(TOPICS)
    n = rng.choice(sorted(NUMBER_WORDS))
    chosen = sorted(rng.sample(range(len(topic.facts)), n))
    task = rng.choice(LIST_TASKS).format(n=NUMBER_WORDS[n], t=topic.name)
    prompt = _join(rng, task, rng.choice(BULLETS).format(n=NUMBER_WORDS[n]))
    response = "\n".join(f"- {topic.facts[i]}" for i in chosen)
    return prompt, response, [{"kind": "bullet_list", "n_items": n}]


def gen_quote_wrap(rng: random.Random) -> Item:
    topic, fact = _fact(rng)
    prompt = _join(rng, _task(rng, topic), rng.choice(QUOTE))
    return prompt, f'"{fact}"', [{"kind": "quote_wrap"}]


def gen_start_phrase(rng: random.Random) -> Item:
    topic, fact = _fact(rng)
    phrase = rng.choice(START_PHRASES)
    prompt = _join(rng, _task(rng, topic), rng.choice(START).format(p=phrase))
    return prompt, f"{phrase} {fact}", [{"kind": "start_phrase", "phrase": phrase}]


def gen_title_brackets(rng: random.Random) -> Item:
    topic, fact = _fact(rng)
    title = rng.choice(TITLE_PATTERNS).format(T=topic.name.title())
    prompt = _join(rng, _task(rng, topic), rng.choice(TITLE))
    return prompt, f"<<{title}>>\n{fact}", [{"kind": "title_brackets"}]


# ---- compositional: out-of-domain transfer of demonstrated behaviour -------------
# Unseen combinations of demonstrated constraints (demonstration wordings, joined).

def gen_combo_upper_end(rng: random.Random) -> Item:
    topic, fact = _fact(rng)
    phrase = rng.choice(END_PHRASES).upper()
    prompt = _join(rng, _task(rng, topic), rng.choice(UPPER), rng.choice(END).format(p=phrase))
    checks = [{"kind": "uppercase"}, {"kind": "end_phrase", "phrase": phrase}]
    return prompt, f"{fact} {phrase}".upper(), checks


def gen_combo_lower_end(rng: random.Random) -> Item:
    topic, fact = _fact(rng)
    phrase = rng.choice(END_PHRASES).lower()
    prompt = _join(rng, _task(rng, topic), rng.choice(LOWER), rng.choice(END).format(p=phrase))
    checks = [{"kind": "lowercase"}, {"kind": "end_phrase", "phrase": phrase}]
    return prompt, f"{fact} {phrase}".lower(), checks


def gen_combo_keyword_end(rng: random.Random) -> Item:
    topic, fact = _fact(rng)
    keyword, phrase = _keyword(rng, fact), rng.choice(END_PHRASES)
    prompt = _join(rng, _task(rng, topic), rng.choice(KEYWORD).format(k=keyword),
                   rng.choice(END).format(p=phrase))
    checks = [{"kind": "include_keyword", "keyword": keyword}, {"kind": "end_phrase", "phrase": phrase}]
    return prompt, f"{fact} {phrase}", checks


def gen_combo_lower_keyword_limit(rng: random.Random) -> Item:
    topic, fact = _fact(rng)
    keyword, limit = _keyword(rng, fact), _limit(rng, fact)
    constraint = rng.choice(LOWER_KEYWORD_LIMIT).format(k=keyword, n=limit)
    checks = [{"kind": "lowercase"}, {"kind": "include_keyword", "keyword": keyword},
              {"kind": "word_limit", "max_words": limit}]
    return _join(rng, _task(rng, topic), constraint), fact.lower(), checks


# Demonstrated constraints on task types the demonstrations never pair them with.

def gen_upper_two_facts(rng: random.Random) -> Item:
    topic = rng.choice(TOPICS)
    first, second = sorted(rng.sample(range(len(topic.facts)), 2))
    prompt = _join(rng, rng.choice(TWO_TASKS).format(t=topic.name), rng.choice(UPPER))
    return prompt, f"{topic.facts[first]} {topic.facts[second]}".upper(), [{"kind": "uppercase"}]


def gen_end_phrase_qa(rng: random.Random) -> Item:
    topic, fact = _fact(rng)
    phrase = rng.choice(END_PHRASES)
    prompt = _join(rng, rng.choice(QA_TASKS).format(t=topic.name), rng.choice(END).format(p=phrase))
    return prompt, f"{fact} {phrase}", [{"kind": "end_phrase", "phrase": phrase}]


# Demonstrated constraints asked in wordings no demonstration uses.

def gen_paraphrase_case(rng: random.Random) -> Item:
    topic, fact = _fact(rng)
    if rng.random() < 0.5:
        prompt = _join(rng, _task(rng, topic), rng.choice(PARA_UPPER))
        return prompt, fact.upper(), [{"kind": "uppercase"}]
    prompt = _join(rng, _task(rng, topic), rng.choice(PARA_LOWER))
    return prompt, fact.lower(), [{"kind": "lowercase"}]


def gen_paraphrase_end(rng: random.Random) -> Item:
    topic, fact = _fact(rng)
    phrase = rng.choice(END_PHRASES)
    prompt = _join(rng, _task(rng, topic), rng.choice(PARA_END).format(p=phrase))
    return prompt, f"{fact} {phrase}", [{"kind": "end_phrase", "phrase": phrase}]


# ---- registry --------------------------------------------------------------------
# The core families come first, with their generators and names (the rng strings)
# unchanged: splits carve pools in registry order, so this keeps the default's SFT
# demonstrations and core eval records the same records whatever is added after them.

FAMILIES: dict[str, Family] = {
    "uppercase": Family("upper", "core", gen_uppercase, "in_domain"),
    "lowercase": Family("lower", "core", gen_lowercase, "in_domain"),
    "include_keyword": Family("keyword", "core", gen_include_keyword, "in_domain"),
    "end_phrase": Family("end", "core", gen_end_phrase, "in_domain"),
    "arithmetic_two_step": Family("arith2", "core", ARITHMETIC["arithmetic_two_step"], "arithmetic"),
    "combo_upper_end": Family("upend", "prompt", gen_combo_upper_end, "compositional"),
    "combo_lower_end": Family("lowend", "prompt", gen_combo_lower_end, "compositional"),
    "combo_keyword_end": Family("keyend", "prompt", gen_combo_keyword_end, "compositional"),
    "upper_two_facts": Family("up2", "prompt", gen_upper_two_facts, "compositional"),
    "end_phrase_qa": Family("endqa", "prompt", gen_end_phrase_qa, "compositional"),
    "paraphrase_case": Family("paracase", "prompt", gen_paraphrase_case, "compositional"),
    "bullet_list": Family("bullets", "prompt", gen_bullet_list, "control"),
    "quote_wrap": Family("quote", "prompt", gen_quote_wrap, "control"),
    "start_phrase": Family("start", "prompt", gen_start_phrase, "control"),
    "arithmetic_add_sub": Family("arith1", "prompt", ARITHMETIC["arithmetic_add_sub"], "arithmetic"),
    "combo_lower_keyword_limit": Family("lowkeylim", "heldout", gen_combo_lower_keyword_limit,
                                        "compositional"),
    "paraphrase_end": Family("paraend", "heldout", gen_paraphrase_end, "compositional"),
    "title_brackets": Family("title", "heldout", gen_title_brackets, "control"),
    "arithmetic_three_step": Family("arith3", "heldout", ARITHMETIC["arithmetic_three_step"], "arithmetic"),
    # eval only: its demonstrated-format solution (up to ~60 tokens) outgrows the rollouts' 48-token budget
    "arithmetic_four_step": Family("arith4", "heldout", ARITHMETIC["arithmetic_four_step"], "arithmetic"),
}

GROUPS = ("core", "prompt", "heldout")
REPORT_GROUPS = ("in_domain", "compositional", "control", "arithmetic")
FAMILY_GROUPS: dict[str, str] = {name: fam.group for name, fam in FAMILIES.items()}
FAMILY_REPORT_GROUPS: dict[str, str] = {name: fam.report for name, fam in FAMILIES.items()}

# Attempts to draw a prompt not yet produced before accepting a repeat: keeps a
# family's prompts distinct while its template space allows it.
_MAX_REDRAWS = 50


def families_in(group: str) -> list[str]:
    """Family names of one group, in registry order."""
    if group not in GROUPS:
        raise ValueError(f"unknown group {group!r}; valid groups: {list(GROUPS)}")
    return [name for name, fam in FAMILIES.items() if fam.group == group]


def families_reported_as(report: str) -> list[str]:
    """Family names of one report group, in registry order."""
    if report not in REPORT_GROUPS:
        raise ValueError(f"unknown report group {report!r}; valid report groups: {list(REPORT_GROUPS)}")
    return [name for name, fam in FAMILIES.items() if fam.report == report]


def _family(family: str) -> Family:
    if family not in FAMILIES:
        raise KeyError(f"unknown family {family!r}; valid families: {sorted(FAMILIES)}")
    return FAMILIES[family]


def generate_family(family: str, n: int, seed: int) -> list[dict]:
    """`n` records of one family, a pure function of (family, n, seed).

    Prefix-stable (the first k records of n are the records of k), so callers can grow
    a pool without reshuffling it. Prompts are kept distinct where the family's
    template space allows; ids are always unique.
    """
    spec = _family(family)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"srppo-testbed/{family}/{seed}")  # str seeds are hash-stable
    seen: set[str] = set()
    records = []
    for index in range(n):
        for _ in range(_MAX_REDRAWS):
            prompt, response, checks = spec.generate(rng)
            if prompt not in seen:
                break
        seen.add(prompt)
        records.append({
            "id": f"{spec.prefix}-{index:05d}",
            "family": family,
            "messages": [{"role": "user", "content": prompt}],
            "response": response,
            "checks": checks,
        })
    return records
