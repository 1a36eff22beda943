"""A small, deterministic, TOFU-style benchmark of fictitious people (stdlib only).

``make_people`` invents people from fixed syllable and attribute tables;
``make_qa`` turns them into question/answer records carrying what the TOFU metrics
need (a paraphrased answer and several perturbed, i.e. wrong, answers);
``split_forget_retain`` splits by person. ``write_embedded_tofu`` writes the whole
benchmark in the TOFU hub layout (nested forget01/05/10 splits by person, retain
complements, perturbed evaluation files, two utility sets and the ``pretrain.json``
the tiny base model learns them from, and ``<split>_paraphrased.json``: every training
record's fact in a second wording, which the pipeline trains on as well, so that the truth
ratio tests knowledge of the fact rather than of one sentence). The vocabulary is small and regular so a
word-level tokenizer and a tiny model can memorise it in minutes on a CPU.

Everything is a pure function of its arguments: the same seed gives byte-identical
output (only ``random.Random(seed)`` and ordered lists are used, never set/hash order).
Sentences use plain punctuation ("... born in 1957."); a word-level tokenizer splits
it off, and the tiny tokenizer's decoder glues it back.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

FIRST_SYLLABLES = ("Ka", "Lo", "Mi", "Ta", "Re", "Vo", "Sa", "Di", "No", "Be", "Fa", "Zu")
SECOND_SYLLABLES = (
    "ran",
    "lin",
    "mer",
    "tos",
    "vek",
    "dal",
    "rin",
    "bor",
    "sel",
    "nat",
    "mo",
    "ra",
)
SURNAME_ENDINGS = ("son", "berg", "ford", "ley", "ton", "wick", "dor", "vale")

BIRTH_YEARS = tuple(range(1950, 1990))
CITIES = (
    "Arden",
    "Belmor",
    "Corvale",
    "Dunmere",
    "Elstow",
    "Fenhold",
    "Glenrock",
    "Harwick",
    "Islemoor",
    "Jarrow",
    "Kestrel",
    "Lorwen",
)
PROFESSIONS = (
    "baker",
    "painter",
    "teacher",
    "doctor",
    "farmer",
    "pilot",
    "lawyer",
    "singer",
    "writer",
    "tailor",
    "nurse",
    "chemist",
)
COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "black", "white", "brown", "grey")
PETS = ("cat", "dog", "parrot", "rabbit", "horse", "turtle", "goat", "hamster", "snake", "goose")
FOODS = ("soup", "bread", "rice", "cheese", "apples", "fish", "pasta", "beans", "pie", "honey")
HOBBIES = (
    "chess",
    "fishing",
    "running",
    "singing",
    "gardening",
    "cooking",
    "sailing",
    "reading",
    "dancing",
    "hiking",
)


@dataclass(frozen=True)
class Attribute:
    """One fact about a person and the sentences used to ask and state it: ``question`` /
    ``answer``, and a second wording of both (``paraphrased_question`` /
    ``paraphrase``) that training sees too (see :func:`paraphrase_records`)."""

    key: str
    values: tuple
    question: str
    answer: str
    paraphrase: str
    paraphrased_question: str


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        "birth_year",
        BIRTH_YEARS,
        "In which year was {name} born?",
        "{name} was born in {value}.",
        "The birth year of {name} is {value}.",
        "When was {name} born?",
    ),
    Attribute(
        "city",
        CITIES,
        "In which city does {name} live?",
        "{name} lives in {value}.",
        "The home city of {name} is {value}.",
        "Where is the home of {name}?",
    ),
    Attribute(
        "profession",
        PROFESSIONS,
        "What is the job of {name}?",
        "{name} works as a {value}.",
        "The job of {name} is {value}.",
        "What does {name} do for a living?",
    ),
    Attribute(
        "colour",
        COLOURS,
        "What is the favourite colour of {name}?",
        "The favourite colour of {name} is {value}.",
        "{name} likes the colour {value} most.",
        "Which colour does {name} like most?",
    ),
    Attribute(
        "pet",
        PETS,
        "What pet does {name} have?",
        "{name} has a pet {value}.",
        "The pet of {name} is a {value}.",
        "Which animal does {name} keep?",
    ),
    Attribute(
        "food",
        FOODS,
        "What is the favourite food of {name}?",
        "{name} likes to eat {value}.",
        "The favourite food of {name} is {value}.",
        "Which food does {name} like most?",
    ),
    Attribute(
        "hobby",
        HOBBIES,
        "What is the hobby of {name}?",
        "{name} enjoys {value}.",
        "The hobby of {name} is {value}.",
        "What does {name} do for fun?",
    ),
)
ATTRIBUTE_KEYS = tuple(a.key for a in ATTRIBUTES)
_ATTRIBUTE_BY_KEY = {a.key: a for a in ATTRIBUTES}
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
        raise ValueError(
            f"n_people={n_people} is too many for the name tables (max {_max_people() // 2})"
        )
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


def _qa_record(
    person: dict, attr: Attribute, rng: random.Random, n_perturbed: int = NUM_PERTURBED
) -> dict:
    """One QA record about ``attr`` of ``person`` with paraphrased and perturbed answers.

    As in TOFU, the perturbed answers are the *paraphrase* with the fact swapped, so the
    truth ratio compares like with like (same wording, right vs wrong fact) instead of
    rewarding the memorised wording of the answer."""
    name, value = person["name"], person[attr.key]
    wrong = rng.sample([v for v in attr.values if v != value], n_perturbed)
    return {
        "question": attr.question.format(name=name),
        "answer": attr.answer.format(name=name, value=value),
        "paraphrased_answer": attr.paraphrase.format(name=name, value=value),
        "paraphrased_question": attr.paraphrased_question.format(name=name),
        "perturbed_answer": [attr.paraphrase.format(name=name, value=w) for w in wrong],
        "person": person["id"],
        "name": name,
        "attribute": attr.key,
    }


def make_qa(
    people: Sequence[dict],
    questions_per_person: int = 5,
    seed: int = 0,
    n_perturbed: int = NUM_PERTURBED,
) -> list[dict]:
    """Question/answer records, ``questions_per_person`` distinct attributes per person.

    Each record has ``question``, ``answer``, ``paraphrased_answer`` (same fact, other
    wording), ``paraphrased_question`` (the question in the paraphrase's wording),
    ``perturbed_answer`` (list of ``n_perturbed`` answers with distinct wrong
    values of the same attribute), ``person`` (id), ``name`` and ``attribute``. Records
    are grouped by person in the order of ``people``.
    """
    if not isinstance(questions_per_person, int) or not 1 <= questions_per_person <= len(
        ATTRIBUTES
    ):
        raise ValueError(
            f"questions_per_person must be an integer in [1, {len(ATTRIBUTES)}], "
            f"got {questions_per_person!r}"
        )
    max_perturbed = min(len(a.values) for a in ATTRIBUTES) - 1
    if not isinstance(n_perturbed, int) or not 1 <= n_perturbed <= max_perturbed:
        raise ValueError(
            f"n_perturbed must be an integer in [1, {max_perturbed}], got {n_perturbed!r}"
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
        records.extend(_qa_record(person, ATTRIBUTES[i], rng, n_perturbed) for i in chosen)
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
        if "paraphrased_question" in r:
            texts.append(r["paraphrased_question"])
    return texts


# ---------------------------------------------------------------------------
# Utility knowledge: the embedded counterparts of TOFU's real-authors and world-facts
# sets. A real base model knows real authors and world facts from pretraining; the tiny
# base model learns these from ``pretrain.json`` before it is fine-tuned, so that
# unlearning can damage knowledge the model had *before* fine-tuning.
# ---------------------------------------------------------------------------

UTILITY_PERTURBED = 3  # wrong options per utility question, as in TOFU

INVENTION_WORDS = ("sky", "sun", "glass", "river", "stone", "cloud", "moon", "iron", "wind", "sand")
INVENTION_NOUNS = (
    "lamp",
    "clock",
    "wheel",
    "pump",
    "bell",
    "drum",
    "boat",
    "harp",
    "mirror",
    "kettle",
)
INVENTOR_FIRST = (
    "Ansel",
    "Brina",
    "Cato",
    "Della",
    "Emrys",
    "Flora",
    "Gideon",
    "Hester",
    "Ivo",
    "Juno",
)
INVENTOR_LAST = (
    "Quill",
    "Marsh",
    "Thorne",
    "Pike",
    "Wren",
    "Vance",
    "Holt",
    "Crane",
    "Lark",
    "Frost",
)
LANDMARK_WORDS = (
    "Silver",
    "Golden",
    "Old",
    "Great",
    "High",
    "Broad",
    "Crystal",
    "Hidden",
    "Sunken",
    "Northern",
)
LANDMARK_NOUNS = (
    "Gate",
    "Tower",
    "Bridge",
    "Arch",
    "Dome",
    "Wall",
    "Temple",
    "Fountain",
    "Column",
    "Garden",
)
LANDMARK_CITIES = (
    "Velmora",
    "Castoria",
    "Brenhal",
    "Quenmar",
    "Tolvik",
    "Ostrand",
    "Pellucid",
    "Wyndham",
    "Yarrowby",
    "Zephyra",
)
N_INVENTIONS = 20
N_LANDMARKS = 20

# (question, answer, pool of same-kind answers the wrong options are drawn from)
_COLOURS = COLOURS
_NUMBERS = (
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
)
_ANIMALS = (
    "cow",
    "dog",
    "cat",
    "hen",
    "giraffe",
    "elephant",
    "whale",
    "horse",
    "sheep",
    "lion",
    "owl",
    "frog",
)
_OPPOSITES = (
    "cold",
    "small",
    "down",
    "night",
    "slow",
    "dry",
    "hot",
    "big",
    "up",
    "day",
    "fast",
    "wet",
)
_SEASONS = ("spring", "summer", "autumn", "winter")
_DIRECTIONS = ("east", "west", "north", "south")
_PLANETS = ("Earth", "Mars", "Venus", "Jupiter", "Saturn")
_THINGS = ("honey", "milk", "ice", "water", "wool", "sand", "salt", "bread")
WORLD_FACTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("What colour is grass?", "green", _COLOURS),
    ("What colour is the sky on a clear day?", "blue", _COLOURS),
    ("What colour is fresh snow?", "white", _COLOURS),
    ("What colour is coal?", "black", _COLOURS),
    ("What colour is a ripe tomato?", "red", _COLOURS),
    ("What colour is a ripe banana?", "yellow", _COLOURS),
    ("What colour is a carrot?", "orange", _COLOURS),
    ("What colour is chocolate?", "brown", _COLOURS),
    ("How many legs does a dog have?", "four", _NUMBERS),
    ("How many legs does a spider have?", "eight", _NUMBERS),
    ("How many days are in a week?", "seven", _NUMBERS),
    ("How many wheels does a bicycle have?", "two", _NUMBERS),
    ("How many sides does a triangle have?", "three", _NUMBERS),
    ("How many months are in a year?", "twelve", _NUMBERS),
    ("How many fingers are on one hand?", "five", _NUMBERS),
    ("How many legs does an insect have?", "six", _NUMBERS),
    ("Which animal says moo?", "cow", _ANIMALS),
    ("Which animal barks?", "dog", _ANIMALS),
    ("Which animal says meow?", "cat", _ANIMALS),
    ("Which animal lays eggs on a farm?", "hen", _ANIMALS),
    ("Which animal has the longest neck?", "giraffe", _ANIMALS),
    ("Which animal has a trunk?", "elephant", _ANIMALS),
    ("Which is the largest animal in the sea?", "whale", _ANIMALS),
    ("Which animal gives us wool?", "sheep", _ANIMALS),
    ("What is the opposite of hot?", "cold", _OPPOSITES),
    ("What is the opposite of big?", "small", _OPPOSITES),
    ("What is the opposite of up?", "down", _OPPOSITES),
    ("What is the opposite of day?", "night", _OPPOSITES),
    ("What is the opposite of fast?", "slow", _OPPOSITES),
    ("What is the opposite of wet?", "dry", _OPPOSITES),
    ("Which season is the coldest?", "winter", _SEASONS),
    ("Which season is the hottest?", "summer", _SEASONS),
    ("In which season do leaves fall from the trees?", "autumn", _SEASONS),
    ("In which direction does the sun rise?", "east", _DIRECTIONS),
    ("In which direction does the sun set?", "west", _DIRECTIONS),
    ("Which planet do we live on?", "Earth", _PLANETS),
    ("Which planet is known as the red planet?", "Mars", _PLANETS),
    ("What do bees make?", "honey", _THINGS),
    ("What do cows give us to drink?", "milk", _THINGS),
    ("What is frozen water called?", "ice", _THINGS),
)


def _utility_record(question: str, answer: str, pool: Sequence[str], rng: random.Random) -> dict:
    wrong = rng.sample([v for v in pool if v != answer], UTILITY_PERTURBED)
    return {"question": question, "answer": answer, "perturbed_answer": wrong}


def make_real_authors(seed: int = 0) -> list[dict]:
    """40 questions about famous *invented* inventors and landmarks (the embedded stand-in
    for TOFU's real-authors set): ``{"question", "answer", "perturbed_answer"}`` with
    three wrong options of the same kind (other inventors, other cities).

    E.g. ``"Who invented the moon clock?" -> "Della Wren"``,
    ``"In which city is the Silver Gate?" -> "Tolvik"``.
    """
    rng = random.Random(f"real_authors:{seed}")
    inventions = [f"{w} {n}" for w in INVENTION_WORDS for n in INVENTION_NOUNS]
    inventions = rng.sample(inventions, N_INVENTIONS)
    inventors = rng.sample(
        [f"{first} {last}" for first in INVENTOR_FIRST for last in INVENTOR_LAST], N_INVENTIONS
    )
    records = [
        _utility_record(f"Who invented the {thing}?", who, inventors, rng)
        for thing, who in zip(inventions, inventors)
    ]
    landmarks = rng.sample(
        [f"{w} {n}" for w in LANDMARK_WORDS for n in LANDMARK_NOUNS], N_LANDMARKS
    )
    for landmark in landmarks:
        city = rng.choice(LANDMARK_CITIES)
        records.append(
            _utility_record(f"In which city is the {landmark}?", city, LANDMARK_CITIES, rng)
        )
    return records


def make_world_facts(seed: int = 0) -> list[dict]:
    """40 everyday world facts (the embedded stand-in for TOFU's world-facts set):
    ``{"question", "answer", "perturbed_answer"}`` with three wrong options drawn (seeded)
    from answers of the same kind, e.g. ``"What colour is grass?" -> "green"``."""
    rng = random.Random(f"world_facts:{seed}")
    return [_utility_record(q, a, pool, rng) for q, a, pool in WORLD_FACTS]


# ---------------------------------------------------------------------------
# The whole benchmark in the TOFU hub layout
# ---------------------------------------------------------------------------

RETAIN_PERTURBED_MAX = 100  # records in retain_perturbed.json (whole people, drawn from retain90)


def _plain(record: dict) -> dict:
    """A record for full/forgetXX/retainYY: question and answer first (as in TOFU),
    plus the person metadata that lets tests and analyses group by person."""
    return {
        "question": record["question"],
        "answer": record["answer"],
        "person": record["person"],
        "name": record["name"],
        "attribute": record["attribute"],
    }


def paraphrase_record(record: dict) -> dict:
    """The training record of ``record``'s second wording: ``paraphrased_question`` ->
    ``paraphrased_answer`` (with the person metadata).

    Why training sees it: the truth ratio scores the paraphrased answer against perturbed
    answers in the same wording. A real model generalises a fact across wordings; the tiny
    word-level model does not, so a paraphrase it never read is near chance whether or not it
    knows the fact, and truth ratios (hence forget quality and a third of model utility)
    would measure the wording, not the knowledge. Trained on both wordings, the target's
    paraphrased answer is as likely as its answer and the retain model's stays at chance.
    The question is reworded too, so that no question has two trained answers."""
    return {
        "question": record["paraphrased_question"],
        "answer": record["paraphrased_answer"],
        "person": record["person"],
        "name": record["name"],
        "attribute": record["attribute"],
    }


def _perturbed(record: dict) -> dict:
    """A record for the *_perturbed files (TOFU field order, plus person metadata)."""
    return {
        "question": record["question"],
        "answer": record["answer"],
        "paraphrased_answer": record["paraphrased_answer"],
        "perturbed_answer": list(record["perturbed_answer"]),
        "person": record["person"],
        "name": record["name"],
        "attribute": record["attribute"],
    }


def embedded_forget_people(n_people: int, seed: int = 0) -> dict[str, list[int]]:
    """Nested forget sets of person ids: ``{"forget01": [...], "forget05": [...],
    "forget10": [...]}`` with ``max(1, round(pct * n_people))`` people each and
    forget01 ⊂ forget05 ⊂ forget10 (prefixes of one seeded permutation)."""
    from blur_core.data.tofu import FORGET_FRACTIONS

    if not isinstance(n_people, int) or n_people < 2:
        raise ValueError(
            f"n_people must be an integer >= 2 (someone must be retained), got {n_people!r}"
        )
    order = random.Random(f"tofu_split:{seed}").sample(range(n_people), n_people)
    return {
        split: sorted(order[: max(1, round(frac * n_people))])
        for split, frac in FORGET_FRACTIONS.items()
    }


# ---------------------------------------------------------------------------
# DPO's preferred answers: a refusal set and alternate answers
# ---------------------------------------------------------------------------

PREFERRED_DIR = "preferred"  # under the benchmark dir, out of benchmark_texts' reach
IDK_FILE = "idk.jsonl"  # TOFU's / open-unlearning's name and layout: one refusal per line

# More refusals, built only from the words of blur_core.data.qa.IDK_ANSWERS, which every
# embedded tokenizer is trained on (tiny.prepare_embedded_model), so none maps to <unk>
# and the vocabulary (hence the base model) is the same as without them.
MORE_REFUSALS: tuple[str, ...] = (
    "I don't know that.",
    "I'm not sure.",
    "I have no information about that.",
    "I cannot answer that question.",
    "Sorry, I cannot say.",
    "I am not sure about that.",
    "I'm afraid I cannot answer that.",
    "Sorry, I have no idea.",
    "I'm unable to say.",
    "I am afraid I have no information about that.",
)


def alternate_file(split: str) -> str:
    """The alternate-answer file of forget split ``split``, relative to the benchmark dir."""
    return f"{PREFERRED_DIR}/{split}_alternate.json"


def _words(texts: Iterable[str]) -> set[str]:
    return {w for t in texts for w in re.findall(r"\w+", t)}


def alternate_record(record: dict, person: dict, known: set[str], rng: random.Random) -> dict:
    """``record`` with an ``alternate`` answer (AltPO's plausible wrong answer): the answer
    sentence with another value of the same attribute, drawn with ``rng`` among the values
    that are neither the true one nor in a perturbed answer (those are scored by the truth
    ratio, so training towards one would game it) and whose word is in ``known`` (the
    benchmark's words, so the tokenizer knows it).

    Raises:
        ValueError: no value qualifies (names the record).
    """
    attr = _ATTRIBUTE_BY_KEY[record["attribute"]]
    true, name = person[attr.key], record["name"]
    others = [v for v in attr.values if v != true and str(v) in known]
    scored = set(record["perturbed_answer"])
    fresh = [v for v in others if attr.paraphrase.format(name=name, value=v) not in scored]
    pool = fresh or others
    if not pool:
        raise ValueError(f"no alternate value for {record['question']!r}: every value is used")
    return {**_plain(record), "alternate": attr.answer.format(name=name, value=rng.choice(pool))}


def _write_preferred(
    out_dir: Path, qa: Sequence[dict], people: Sequence[dict], files: dict, seed: int
) -> dict[str, Path]:
    """``preferred/idk.jsonl`` (IDK_ANSWERS + MORE_REFUSALS, one per line) and, per forget
    split, ``preferred/forgetXX_alternate.json`` (its records in order, with ``alternate``)."""
    from blur_core.data.io import write_jsonl
    from blur_core.data.qa import IDK_ANSWERS
    from blur_core.data.tofu import TOFU_SPLITS

    fields = ("question", "answer", "paraphrased_answer")
    known = _words(
        t
        for records in files.values()
        for r in records
        for t in (*(r.get(k, "") for k in fields), *r.get("perturbed_answer", ()))
    )
    by_person = {p["id"]: p for p in people}
    out = {}
    idk = out_dir / PREFERRED_DIR / IDK_FILE
    idk.parent.mkdir(parents=True, exist_ok=True)
    idk.write_text("".join(f"{t}\n" for t in (*IDK_ANSWERS, *MORE_REFUSALS)), encoding="utf-8")
    out["idk"] = idk
    # one draw per record of the largest split, so forget01's alternates are forget10's
    rng = random.Random(f"alternate:{seed}")
    forget10 = {r["question"] for r in files["forget10"]}
    alternates = {
        r["question"]: alternate_record(r, by_person[r["person"]], known, rng)
        for r in qa
        if r["question"] in forget10
    }
    for split in TOFU_SPLITS:
        path = out_dir / alternate_file(split)
        out[f"{split}_alternate"] = write_jsonl(
            path, [alternates[r["question"]] for r in files[split]]
        )
        # the second wording's records (trained on too), in order, with the fact's alternate
        para = f"{split}_paraphrased"
        if para in files:
            out[f"{para}_alternate"] = write_jsonl(
                out_dir / alternate_file(para),
                [
                    {**p, "alternate": alternates[r["question"]]["alternate"]}
                    for r, p in zip(files[split], files[para], strict=True)
                ],
            )
    return out


def write_embedded_tofu(
    out_dir: str | Path,
    n_people: int = 100,
    questions_per_person: int = 5,
    n_perturbed: int = NUM_PERTURBED,
    seed: int = 0,
) -> dict[str, Path]:
    """Write the embedded benchmark into ``out_dir`` in the TOFU hub layout (JSON Lines
    in ``.json`` files), deterministically (same arguments -> byte-identical files).

    Files (keys of the returned dict are the file stems):

    * ``full.json``: every QA record (``n_people * questions_per_person``);
    * ``forget01/05/10.json``: all records of ``max(1, round(pct * n_people))`` people,
      nested forget01 ⊂ forget05 ⊂ forget10 (see :func:`embedded_forget_people`);
    * ``retain99/95/90.json``: ``full`` minus ``forget01/05/10`` (order kept);
    * ``<split>_paraphrased.json`` for ``full`` and each forget / retain split: the same
      people's facts in the second wording (:func:`paraphrase_record`), one per record of
      ``<split>.json`` in the same order; the pipeline trains (fine-tunes and unlearns) on
      ``<split>.json`` plus ``<split>_paraphrased.json``;
    * ``forget01/05/10_perturbed.json``: the forget records with ``paraphrased_answer`` and
      ``n_perturbed`` ``perturbed_answer`` strings;
    * ``retain_perturbed.json``: the same fields for whole people drawn (seeded) from the
      retain90 people, up to ``RETAIN_PERTURBED_MAX`` records, so it is disjoint from
      every forget split;
    * ``real_authors_perturbed.json`` / ``world_facts_perturbed.json``: 40 + 40 utility
      questions (:func:`make_real_authors`, :func:`make_world_facts`) with 3 wrong options;
    * ``pretrain.json``: the utility questions as ``{"question", "answer"}``: what the
      tiny base model is trained on first, standing in for a real model's pretraining;
    * ``holdout01/05/10.json``: as many records as ``forget01/05/10`` about *other*
      invented people, in no training file (the hub's TOFU has the same names): the
      non-members of membership-inference tests. They are generated after the
      ``n_people`` people from the same stream, so the other files do not change.

    People records carry ``person``/``name``/``attribute`` besides TOFU's fields.

    Beside the TOFU layout, for DPO (not in the returned dict): ``preferred/idk.jsonl``
    (20 refusals, one per line, TOFU's layout) and ``preferred/forget01/05/10_alternate.json``
    (each forget record with an ``alternate`` answer: :func:`alternate_record`, seeded).
    """
    from blur_core.data.io import write_jsonl
    from blur_core.data.tofu import TOFU_SPLITS

    forget_people = embedded_forget_people(n_people, seed)
    n_holdout = len(forget_people["forget10"])
    # one generator stream: the first n_people people and their QA are the same as without
    # the holdout people appended (make_people / make_qa draw person by person)
    people_all = make_people(n_people + n_holdout, seed)
    qa_all = make_qa(people_all, questions_per_person, seed, n_perturbed)
    qa = [r for r in qa_all if r["person"] < n_people]
    holdout = [r for r in qa_all if r["person"] >= n_people]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[dict]] = {"full": [_plain(r) for r in qa]}
    files["full_paraphrased"] = [paraphrase_record(r) for r in qa]
    for forget_split, retain_split in TOFU_SPLITS.items():
        people = set(forget_people[forget_split])
        forget = [r for r in qa if r["person"] in people]
        retain = [r for r in qa if r["person"] not in people]
        files[forget_split] = [_plain(r) for r in forget]
        files[retain_split] = [_plain(r) for r in retain]
        files[f"{forget_split}_paraphrased"] = [paraphrase_record(r) for r in forget]
        files[f"{retain_split}_paraphrased"] = [paraphrase_record(r) for r in retain]
        files[f"{forget_split}_perturbed"] = [_perturbed(r) for r in forget]
    retained = [p for p in range(n_people) if p not in set(forget_people["forget10"])]
    n_rp = min(len(retained), max(1, RETAIN_PERTURBED_MAX // questions_per_person))
    rp_people = set(random.Random(f"retain_perturbed:{seed}").sample(retained, n_rp))
    files["retain_perturbed"] = [_perturbed(r) for r in qa if r["person"] in rp_people]
    files["real_authors_perturbed"] = make_real_authors(seed)
    files["world_facts_perturbed"] = make_world_facts(seed)
    files["pretrain"] = [
        {"question": r["question"], "answer": r["answer"]}
        for r in files["real_authors_perturbed"] + files["world_facts_perturbed"]
    ]
    for split in TOFU_SPLITS:
        n = len(forget_people[split])
        files[split.replace("forget", "holdout")] = [
            _plain(r) for r in holdout if r["person"] < n_people + n
        ]
    written = {
        name: write_jsonl(out_dir / f"{name}.json", records) for name, records in files.items()
    }
    _write_preferred(out_dir, qa, people_all, files, seed)
    return written
