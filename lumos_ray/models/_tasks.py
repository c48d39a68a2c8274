"""Generated tool-use tasks for ``lumos-tiny-tools``: arithmetic and unit conversion
through ``calculator``, day counts through ``date_diff``.

Why generated, with a split by construction: the claim "the model calls tools" is only
worth something on prompts it never saw. The held-out set is built from operands and
dates that never occur in training (numbers drawn from a reserved set) and from
phrasings that never occur in training (a reserved core sentence per operation, and
reserved lead-ins and tails), so a model that memorised its training prompts fails it.

Each task knows the exact call a correct agent makes (tool + arguments) and the answer
it gives once the tool has answered, so a teacher can act it out and an evaluation can
score a model's call and answer against it.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "DEMO_INSTRUCTIONS",
    "DEMO_TOOLS",
    "ToolTask",
    "answer_for",
    "answer_names_result",
    "demo_tasks",
    "make_tasks",
    "result_value",
]

#: The tools the demo agent is offered, in this order (training renders them the same).
DEMO_TOOLS = ("calculator", "date_diff")

#: The demo agent's instructions: the system turn of every training transcript.
DEMO_INSTRUCTIONS = "You answer with the tools: calculator for arithmetic, date_diff for dates."

Split = Literal["train", "heldout"]


@dataclass(frozen=True)
class ToolTask:
    """One prompt with the tool call that answers it."""

    prompt: str
    tool: str
    arguments: dict[str, Any]
    kind: str  # add | sub | mul | div | convert | days
    split: Split
    #: Which held-out novelty the prompt has ("numbers", "phrasing"): for the report.
    novelty: tuple[str, ...] = field(default=())


# Core sentences per operation: {a} and {b} are the operands, in the order the
# expression uses them. The LAST core of each list is reserved for held-out prompts.
_CORES: dict[str, list[str]] = {
    "add": [
        "What is {a} plus {b}?",
        "Add {a} and {b}.",
        "What is the sum of {a} and {b}?",
        "Calculate {a} + {b}.",
        "How much is {a} plus {b}?",
        "What do you get if you add {b} to {a}?",
        "Work out {a} + {b} for me.",
    ],
    "sub": [
        "What is {a} minus {b}?",
        "Subtract {b} from {a}.",
        "Calculate {a} - {b}.",
        "How much is {a} minus {b}?",
        "What is the difference between {a} and {b}?",
        "Take {b} away from {a}.",
        "Work out {a} - {b} for me.",
    ],
    "mul": [
        "What is {a} times {b}?",
        "Multiply {a} by {b}.",
        "What is the product of {a} and {b}?",
        "Calculate {a} * {b}.",
        "How much is {a} times {b}?",
        "What is {a} multiplied by {b}?",
        "Work out {a} * {b} for me.",
    ],
    "div": [
        "What is {a} divided by {b}?",
        "Divide {a} by {b}.",
        "Calculate {a} / {b}.",
        "How much is {a} divided by {b}?",
        "What is {a} over {b}?",
        "Work out {a} / {b} for me.",
    ],
    "days": [
        "How many days are there between {a} and {b}?",
        "How many days from {a} to {b}?",
        "Count the days from {a} until {b}.",
        "What is the number of days between {a} and {b}?",
        "How many days pass from {a} to {b}?",
        "Work out the days from {a} to {b} for me.",
    ],
}

# More core sentences that only training uses (never held out, so the held-out
# generator above draws exactly the prompts it drew before they existed). Why: the
# misses of the first committed build (issue 15, 77% exact) were mostly mis-copied
# operands after an unseen phrasing, worst where the operands come in the other order
# than the expression's ("Subtract {b} from {a}": sub 56%). More sentence shapes, and
# more of them with the operands reversed, teach it to find each operand by the words
# around it rather than by where it sits. None of them contains a reserved part.
_TRAIN_CORES: dict[str, list[str]] = {
    "add": [
        "Add {b} to {a}.",
        "Increase {a} by {b}.",
        "What is {a} + {b}?",
        "Compute {a} + {b}.",
        "Find the total of {a} and {b}.",
        "What number is {b} more than {a}?",
        "Sum up {a} and {b}.",
        "{a} + {b}?",
    ],
    "sub": [
        "Deduct {b} from {a}.",
        "Remove {b} from {a}.",
        "What is {a} take away {b}?",
        "Compute {a} - {b}.",
        "What is {a} - {b}?",
        "Find {a} minus {b}.",
        "How much is left if you take {b} from {a}?",
        "Reduce {a} by {b}.",
        "What is {b} less than {a}?",
        "{a} - {b}?",
    ],
    "mul": [
        "Compute {a} * {b}.",
        "What is {a} * {b}?",
        "Find {a} times {b}.",
        "Find the product of {a} and {b}.",
        "{a} * {b}?",
    ],
    "div": [
        "Compute {a} / {b}.",
        "What is {a} / {b}?",
        "Find {a} divided by {b}.",
        "How many times does {b} go into {a}?",
        "Split {a} into {b} equal parts.",
        "{a} / {b}?",
    ],
    "days": [],
}

# Unit conversions as a multiplication: (core sentence with {a}, factor). The last
# one is reserved for held-out prompts.
_CONVERSIONS: list[tuple[str, int]] = [
    ("Convert {a} km to meters.", 1000),
    ("How many minutes are in {a} hours?", 60),
    ("How many seconds are in {a} minutes?", 60),
    ("Convert {a} kg to grams.", 1000),
    ("How many hours are in {a} days?", 24),
    ("How many inches are in {a} feet?", 12),
    ("How many days are in {a} weeks?", 7),
    ("Convert {a} liters to milliliters.", 1000),
    ("How many eggs are in {a} dozen?", 12),
    ("How many meters are in {a} kilometers?", 1000),
]

# Conversions only training uses. The words "kilometers" (and "kilograms") occur in
# training only in these sentences; the held-out sentence "How many meters are in {a}
# kilometers?" stays unseen (its reserved part, "How many meters are in ", is in no
# training prompt). Before these, "kilometers" was a word the model never read, and it
# answered that sentence with the factor of another unit (`N * 12`, 15 of 46 misses).
_TRAIN_CONVERSIONS: list[tuple[str, int]] = [
    ("Convert {a} kilometers to meters.", 1000),
    ("What is {a} kilometers in meters?", 1000),
    ("How many grams are in {a} kilograms?", 1000),
    ("Convert {a} hours to minutes.", 60),
    ("How many milliliters are in {a} liters?", 1000),
    ("Convert {a} feet to inches.", 12),
]

# Lead-ins and tails; the last two of each are reserved for held-out prompts.
_LEADS = [
    "",
    "",
    "Please tell me: ",
    "Quick question. ",
    "Hi! ",
    "I need help. ",
    "Use a tool. ",
    "Can you check this? ",
    "Hey there. ",
    "One more question: ",
]
_TAILS = ["", "", " Thanks.", " Please be exact.", " Thank you!", " Be precise.", " Cheers."]

_N_HELD_LEADS = 2
_N_HELD_TAILS = 2

#: Share of training prompts whose lead-in and tail are made of random words instead.
_FILLER_SHARE = 0.6


def _reserved_parts() -> list[str]:
    """Every phrasing part only held-out prompts may use."""
    return [
        *(cores[-1].split("{")[0] for cores in _CORES.values()),
        _CONVERSIONS[-1][0].split("{")[0],
        *(x for x in _LEADS[-_N_HELD_LEADS:] if x),
        *(x for x in _TAILS[-_N_HELD_TAILS:] if x),
    ]


def _filler_words() -> list[str]:
    from lumos_ray.models._corpus import CORPUS

    words = " ".join(CORPUS).replace(".", " ").replace(",", " ").split()
    return sorted({w for w in words if w.isalpha()})


_FILLER = _filler_words()
_RESERVED = _reserved_parts()


def _filler(rng: random.Random, core: str) -> str | None:
    """The core with a lead-in and a tail of random words, or None when the draw
    happens to contain a reserved phrasing part.

    Why: with a handful of fixed lead-ins a small model learns where the numbers sit
    after them; an unseen lead-in ("Hey there. ") then derails the copy (H12: most
    held-out failures). Random text around the question teaches it to find the numbers
    wherever they are."""

    def word() -> str:
        # A third of the words are made-up letter strings: the tokenizer cuts them into
        # short pieces, like any word it never saw. An unseen lead-in read that way
        # right before the first number ("Work out 913 + 109" -> 'W' 'or' 'k' ' ' 'ou'
        # 't ') made the first build of this data copy only "91" (issue 15, H15).
        if rng.random() < 1 / 3:
            return "".join(
                rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 7))
            )
        return rng.choice(_FILLER)

    def words(k: int) -> str:
        text = " ".join(word() for _ in range(k))
        return text[:1].upper() + text[1:]

    lead = rng.choice(
        ["", words(rng.randint(1, 4)) + rng.choice([". ", "! ", ": ", "? ", ", ", " "])]
    )
    tail = rng.choice(["", " " + words(rng.randint(1, 4)) + rng.choice([".", "!", "?"])])
    text = lead + core + tail
    return None if any(r in text for r in _RESERVED) else text


def _split_numbers(seed: int) -> tuple[list[int], list[int]]:
    """Operands 2..999, a seeded fifth of them reserved for held-out prompts."""
    nums = list(range(2, 1000))
    random.Random(seed * 7919 + 1).shuffle(nums)
    cut = len(nums) // 5
    return sorted(nums[cut:]), sorted(nums[:cut])


def _split_dates(seed: int) -> tuple[list[dt.date], list[dt.date]]:
    """Dates of 2024-2029, a seeded fifth of them reserved for held-out prompts."""
    start = dt.date(2024, 1, 1)
    days = [start + dt.timedelta(days=i) for i in range(6 * 365)]
    random.Random(seed * 7919 + 2).shuffle(days)
    cut = len(days) // 5
    return sorted(days[cut:]), sorted(days[:cut])


def _train_date_blocks(train_dates: list[dt.date]) -> list[list[dt.date]]:
    """The dates training day counts draw from, in six-year blocks: the training
    four-fifths of 2024-2029 (the years held-out prompts use) and thirteen more blocks
    of years no held-out prompt uses (1988-2023, 2030-2071). A day count draws a block,
    then both dates from it, so its dates are as far apart as held-out ones.

    Why: with only 2024-2029, the 1,752 training dates came back six times each over
    the 5,000 training day counts, and the model learnt them by heart: on fresh pairs of
    training dates it made 57 of 80 calls exact, on held-out dates (unseen) 15 of 41,
    and on dates of 2030-2035 it copied no date at all (issue 15, H15d). Known dates
    let it pick the right month/day pair among the four after ``-`` without really
    copying; ~29,000 dates seen about once each leave copying as the only way."""
    blocks: list[list[dt.date]] = []
    for y0 in range(1988, 2072, 6):
        if y0 == 2024:
            blocks.append(train_dates)
            continue
        first, end = dt.date(y0, 1, 1), dt.date(y0 + 6, 1, 1)
        blocks.append([first + dt.timedelta(days=i) for i in range((end - first).days)])
    return blocks


def _phrase(rng: random.Random, core: str, split: Split, held_core: bool) -> tuple[str, bool]:
    """Core sentence with a lead-in and tail; True when the phrasing is unseen in
    training (reserved core, lead-in or tail)."""
    if split == "train":
        if rng.random() < _FILLER_SHARE:
            text = _filler(rng, core)
            if text is not None:
                return text, False
        lead = rng.choice(_LEADS[:-_N_HELD_LEADS])
        tail = rng.choice(_TAILS[:-_N_HELD_TAILS])
        return lead + core + tail, False
    # Held-out: a reserved core, or a seen core with a reserved lead-in or tail.
    if held_core:
        lead = rng.choice(_LEADS[:-_N_HELD_LEADS])
        tail = rng.choice(_TAILS[:-_N_HELD_TAILS])
    elif rng.random() < 0.5:
        lead = rng.choice(_LEADS[-_N_HELD_LEADS:])
        tail = rng.choice(_TAILS)
    else:
        lead = rng.choice(_LEADS)
        tail = rng.choice(_TAILS[-_N_HELD_TAILS:])
    return lead + core + tail, True


_KINDS = ["add", "sub", "mul", "div", "convert", "days"]


def _one(rng: random.Random, split: Split, nums: list[int], dates: list[list[dt.date]]) -> ToolTask:
    held = split == "heldout"
    # Training draws day counts twice as often (2 in 7): copying two dates into a
    # call is the longest copy of all, and the one that formed late or not at all
    # (issue 15, H15: 5 to 41 of 41 day-count calls across builds of one recipe).
    # Held-out draws stay as they were (the same prompts before and after).
    kind = rng.choice(_KINDS if held else [*_KINDS, "days"])
    novelty = ("numbers",) if held else ()
    if kind == "convert":
        choices = _CONVERSIONS[-1:] if held and rng.random() < 0.5 else _CONVERSIONS[:-1]
        if not held:
            choices = choices + _TRAIN_CONVERSIONS
        core_t, factor = rng.choice(choices)
        held_core = core_t == _CONVERSIONS[-1][0]
        a = rng.choice(nums)
        text, new_phrase = _phrase(rng, core_t.format(a=a), split, held_core)
        return ToolTask(
            prompt=text,
            tool="calculator",
            arguments={"expression": f"{a} * {factor}"},
            kind=kind,
            split=split,
            novelty=novelty + (("phrasing",) if new_phrase else ()),
        )
    cores = _CORES[kind]
    held_core = held and rng.random() < 0.5
    if held:
        core_t = cores[-1] if held_core else rng.choice(cores[:-1])
    else:
        core_t = rng.choice(cores[:-1] + _TRAIN_CORES[kind])
    if kind == "days":
        # Held-out: one block (its reserved dates), no draw for it (the same prompts).
        block = dates[0] if held else rng.choice(dates)
        d1, d2 = sorted(rng.sample(block, 2))
        a_s, b_s = d1.isoformat(), d2.isoformat()
        text, new_phrase = _phrase(rng, core_t.format(a=a_s, b=b_s), split, held_core)
        return ToolTask(
            prompt=text,
            tool="date_diff",
            arguments={"start": a_s, "end": b_s},
            kind=kind,
            split=split,
            novelty=novelty + (("phrasing",) if new_phrase else ()),
        )
    a, b = rng.choice(nums), rng.choice(nums)
    if kind == "sub" and a < b:
        a, b = b, a
    if kind == "div":
        # Exact quotients only (a = b * q with q also an allowed operand), so the
        # answer is short and the same in every language's float printing.
        q = rng.choice([n for n in nums if n < 100])
        b = rng.choice([n for n in nums if n < 100])
        a = b * q
    op = {"add": "+", "sub": "-", "mul": "*", "div": "/"}[kind]
    text, new_phrase = _phrase(rng, core_t.format(a=a, b=b), split, held_core)
    return ToolTask(
        prompt=text,
        tool="calculator",
        arguments={"expression": f"{a} {op} {b}"},
        kind=kind,
        split=split,
        novelty=novelty + (("phrasing",) if new_phrase else ()),
    )


def make_tasks(n: int, split: Split, seed: int = 0) -> list[ToolTask]:
    """``n`` tasks of one split; the same (n, split, seed) gives the same tasks.

    Train and held-out draw operands and dates from disjoint sets, and held-out
    prompts always carry an unseen phrasing part (core sentence, lead-in or tail)."""
    if n < 0 or n > 1_000_000:
        raise ValueError("n must be between 0 and 1,000,000")
    train_nums, held_nums = _split_numbers(seed)
    train_dates, held_dates = _split_dates(seed)
    if split == "train":
        nums, dates = train_nums, _train_date_blocks(train_dates)
    else:
        nums, dates = held_nums, [held_dates]
    rng = random.Random(f"{seed}-{split}")
    return [_one(rng, split, nums, dates) for _ in range(n)]


def demo_tasks() -> list[ToolTask]:
    """The three questions ``lumos demo`` asks: a product, a unit conversion and a
    difference, each in a phrasing the model was taught (the first core sentence of
    its kind, no lead-in or tail), with operands from the held-out fifth that no
    training prompt uses. Fixed, so the demo is deterministic.

    Why taught phrasings and no day count: the demo shows an agent working. How the
    model copes with phrasings it never saw, and its weak spot (copying the day count
    out of ``date_diff``'s four-number result into the answer), are what
    ``benchmarks/demo_model.py`` measures and docs/demo-model.md reports."""
    _, nums = _split_numbers(0)
    rng = random.Random("lumos-demo")
    big = [n for n in nums if n > 99]
    a, b = rng.sample(big, 2)
    hours = rng.choice(big)
    x, y = sorted(rng.sample(big, 2), reverse=True)
    core, factor = _CONVERSIONS[1]

    def calc(prompt: str, expression: str, kind: str) -> ToolTask:
        return ToolTask(
            prompt=prompt,
            tool="calculator",
            arguments={"expression": expression},
            kind=kind,
            split="heldout",
            novelty=("numbers",),
        )

    return [
        calc(_CORES["mul"][0].format(a=a, b=b), f"{a} * {b}", "mul"),
        calc(core.format(a=hours), f"{hours} * {factor}", "convert"),
        calc(_CORES["sub"][0].format(a=x, b=y), f"{x} - {y}", "sub"),
    ]


def answer_for(task: ToolTask, tool_result: Any) -> str:
    """The answer a correct agent gives once the tool has answered."""
    if task.tool == "date_diff" and isinstance(tool_result, dict):
        return f"There are {tool_result['days']} days."
    return f"The answer is {tool_result}."


def result_value(tool_result: Any) -> Any:
    """The number a correct answer states: the day count out of ``date_diff``'s
    result, the calculator's result as it is."""
    if isinstance(tool_result, dict) and "days" in tool_result:
        return tool_result["days"]
    return tool_result


def answer_names_result(answer: str, tool_result: Any) -> bool:
    """``answer`` states the tool's result as a whole number: 7953 is not in "79531",
    "17953" or "7953.5", and 12 is not in "120".

    The answer check of the demo (``lumos demo``'s check step) and of this package's
    evaluation harness (:mod:`._tool_eval`): the flywheel's whole-value check
    (:func:`lumos_ray.finetune._eval.answer_found`) on the number the tool gave, so
    all three count the same answers right."""
    from lumos_ray.finetune._eval import answer_found

    return answer_found(str(result_value(tool_result)), answer)
