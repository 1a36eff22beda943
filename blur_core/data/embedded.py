"""A small, deterministic, TOFU-style benchmark of fictitious people (stdlib only).

``make_people`` invents people from fixed syllable and attribute tables;
``make_qa`` turns them into question/answer records carrying what the TOFU metrics
need (a paraphrased answer and several perturbed, i.e. wrong, answers);
``split_forget_retain`` splits by person. The vocabulary is small and regular so a
word-level tokenizer and a tiny model can memorise it in minutes on a CPU.

Everything is a pure function of its arguments: the same seed gives byte-identical
output (only ``random.Random(seed)`` and ordered lists are used, never set/hash order).
Sentences use plain punctuation ("... born in 1957."); a word-level tokenizer splits
it off, and the tiny tokenizer's decoder glues it back.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

FIRST_SYLLABLES = ("Ka", "Lo", "Mi", "Ta", "Re", "Vo", "Sa", "Di", "No", "Be", "Fa", "Zu")
SECOND_SYLLABLES = ("ran", "lin", "mer", "tos", "vek", "dal", "rin", "bor", "sel", "nat", "mo", "ra")
SURNAME_ENDINGS = ("son", "berg", "ford", "ley", "ton", "wick", "dor", "vale")

BIRTH_YEARS = tuple(range(1950, 1990))
CITIES = ("Arden", "Belmor", "Corvale", "Dunmere", "Elstow", "Fenhold", "Glenrock",
          "Harwick", "Islemoor", "Jarrow", "Kestrel", "Lorwen")
PROFESSIONS = ("baker", "painter", "teacher", "doctor", "farmer", "pilot", "lawyer",
               "singer", "writer", "tailor", "nurse", "chemist")
COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "black", "white",
           "brown", "grey")
PETS = ("cat", "dog", "parrot", "rabbit", "horse", "turtle", "goat", "hamster",
        "snake", "goose")
FOODS = ("soup", "bread", "rice", "cheese", "apples", "fish", "pasta", "beans",
         "pie", "honey")
HOBBIES = ("chess", "fishing", "running", "singing", "gardening", "cooking", "sailing",
           "reading", "dancing", "hiking")


@dataclass(frozen=True)
class Attribute:
    """One fact about a person and the sentences used to ask and state it."""

    key: str
    values: tuple
    question: str
    answer: str
    paraphrase: str


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("birth_year", BIRTH_YEARS, "In which year was {name} born?",
              "{name} was born in {value}.", "The birth year of {name} is {value}."),
    Attribute("city", CITIES, "In which city does {name} live?",
              "{name} lives in {value}.", "The home city of {name} is {value}."),
    Attribute("profession", PROFESSIONS, "What is the job of {name}?",
              "{name} works as a {value}.", "The job of {name} is {value}."),
    Attribute("colour", COLOURS, "What is the favourite colour of {name}?",
              "The favourite colour of {name} is {value}.", "{name} likes the colour {value} most."),
    Attribute("pet", PETS, "What pet does {name} have?",
              "{name} has a pet {value}.", "The pet of {name} is a {value}."),
    Attribute("food", FOODS, "What is the favourite food of {name}?",
              "{name} likes to eat {value}.", "The favourite food of {name} is {value}."),
    Attribute("hobby", HOBBIES, "What is the hobby of {name}?",
              "{name} enjoys {value}.", "The hobby of {name} is {value}."),
)
ATTRIBUTE_KEYS = tuple(a.key for a in ATTRIBUTES)
NUM_PERTURBED = 3


def _make_name(rng: random.Random) -> str:
    """A two-word name: ``<Syl><syl> <Syl><syl><ending>``, e.g. ``Kalin Tovekson``."""
    first = rng.choice(FIRST_SYLLABLES) + rng.choice(SECOND_SYLLABLES)
    last = rng.choice(FIRST_SYLLABLES) + rng.choice(SECOND_SYLLABLES) + rng.choice(SURNAME_ENDINGS)
    return f"{first} {last}"


def _max_people() -> int:
    """How many distinct names the syllable tables allow."""
    pairs = len(FIRST_SYLLABLES) * len(SECOND_SYLLABLES)
    return pairs * pairs * len(SURNAME_ENDINGS)


def make_people(n_people: int, seed: int = 0) -> list[dict]:
    """Invent ``n_people`` fictitious people with distinct names.

    Each person is ``{"id": i, "name": str, "birth_year": int, "city", "profession",
    "colour", "pet", "food", "hobby": str}``; ids are ``0..n_people-1``.
    """
    if not isinstance(n_people, int) or n_people < 1:
        raise ValueError(f"n_people must be a positive integer, got {n_people!r}")
    if n_people > _max_people() // 2:
        raise ValueError(f"n_people={n_people} is too many for the name tables (max {_max_people() // 2})")
    rng = random.Random(f"people:{seed}")
    people, seen = [], set()
    while len(people) < n_people:
        name = _make_name(rng)
        if name in seen:
            continue
        seen.add(name)
        person = {"id": len(people), "name": name}
        for attr in ATTRIBUTES:
            person[attr.key] = rng.choice(attr.values)
        people.append(person)
    return people


def _qa_record(person: dict, attr: Attribute, rng: random.Random) -> dict:
    """One QA record about ``attr`` of ``person`` with paraphrased and perturbed answers."""
    name, value = person["name"], person[attr.key]
    wrong = rng.sample([v for v in attr.values if v != value], NUM_PERTURBED)
    return {
        "question": attr.question.format(name=name),
        "answer": attr.answer.format(name=name, value=value),
        "paraphrased_answer": attr.paraphrase.format(name=name, value=value),
        "perturbed_answer": [attr.answer.format(name=name, value=w) for w in wrong],
        "person": person["id"],
        "name": name,
        "attribute": attr.key,
    }


def make_qa(people: Sequence[dict], questions_per_person: int = 5, seed: int = 0) -> list[dict]:
    """Question/answer records, ``questions_per_person`` distinct attributes per person.

    Each record has ``question``, ``answer``, ``paraphrased_answer`` (same fact, other
    wording), ``perturbed_answer`` (list of 3 answers with wrong values of the same
    attribute), ``person`` (id), ``name`` and ``attribute``. Records are grouped by
    person in the order of ``people``.
    """
    if not isinstance(questions_per_person, int) or not 1 <= questions_per_person <= len(ATTRIBUTES):
        raise ValueError(
            f"questions_per_person must be an integer in [1, {len(ATTRIBUTES)}], "
            f"got {questions_per_person!r}"
        )
    rng = random.Random(f"qa:{seed}")
    records = []
    for person in people:
        missing = [a.key for a in ATTRIBUTES if a.key not in person] + [
            k for k in ("id", "name") if k not in person
        ]
        if missing:
            raise ValueError(f"person {person!r} lacks field(s) {missing}")
        chosen = sorted(rng.sample(range(len(ATTRIBUTES)), questions_per_person))
        records.extend(_qa_record(person, ATTRIBUTES[i], rng) for i in chosen)
    return records


def split_forget_retain(
    qa: Sequence[dict], forget_fraction: float, seed: int = 0
) -> tuple[list[dict], list[dict]]:
    """Split QA records by person into ``(forget, retain)``.

    ``max(1, round(forget_fraction * n_people))`` people are drawn (seeded); all their
    records go to ``forget``, all others to ``retain``; record order is preserved.

    Raises:
        ValueError: ``forget_fraction`` not in (0, 1), or the split would leave no
            person to retain.
    """
    if not 0.0 < float(forget_fraction) < 1.0:
        raise ValueError(f"forget_fraction must be in (0, 1), got {forget_fraction!r}")
    person_ids = sorted({int(r["person"]) for r in qa})
    n_forget = max(1, round(forget_fraction * len(person_ids)))
    if n_forget >= len(person_ids):
        raise ValueError(
            f"forget_fraction={forget_fraction} forgets {n_forget} of {len(person_ids)} "
            "people, leaving none to retain"
        )
    forgotten = set(random.Random(f"split:{seed}").sample(person_ids, n_forget))
    forget = [r for r in qa if int(r["person"]) in forgotten]
    retain = [r for r in qa if int(r["person"]) not in forgotten]
    return forget, retain


def corpus_texts(qa: Iterable[dict], extra: Iterable[str] = ()) -> list[str]:
    """Every sentence in ``qa`` (questions, answers, paraphrases, perturbations) plus
    ``extra``: the text a word-level tokenizer for this benchmark is trained on."""
    texts = list(extra)
    for r in qa:
        texts += [r["question"], r["answer"], r["paraphrased_answer"], *r["perturbed_answer"]]
    return texts
