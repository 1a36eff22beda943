"""A small, deterministic text corpus about fictitious people: the offline stand-in for
MUSE-News and the WMDP corpora (stdlib only; written in the prepared corpus layout of
:mod:`blur_core.data.corpus`).

Each person (:func:`blur_core.data.embedded.make_people`: name + seven attributes) gets one
short report, one sentence per attribute in a seeded order and wording. The people are
split (seeded) into *forget* people and *retain* people; *holdout* people (generated after
them from the same stream) are in no training file. From the same facts come

* KnowMem: ``{question, answer}`` per fact (answer = the bare value, short as MUSE's
  answers), three of each split held out as the in-context examples;
* VerbMem: ``{prompt, gt}`` per forget report (the first three sentences, the rest);
* PrivLeak: forget, retain and holdout reports as passages;
* 4-way questions ``{question, choices, answer}`` per fact: the value and three other
  values of the same attribute, in a seeded order (a WMDP-style set for the forget people,
  an MMLU-style utility set for the retain people).

The same arguments give byte-identical files.
"""

from __future__ import annotations

import random
from pathlib import Path

from blur_core.data.corpus import (
    training_defaults,
    validate_corpus,
    write_corpus,
)
from blur_core.data.embedded import ATTRIBUTES, make_people

__all__ = ["embedded_corpus_documents", "person_report", "write_embedded_corpus"]

N_ICL = 3
VERBMEM_PROMPT_SENTENCES = 3


def person_report(person: dict, rng: random.Random) -> list[str]:
    """The sentences of one person's report: an opening line, then one sentence per
    attribute in an order and wording (the answer or the paraphrase template) drawn from
    ``rng``."""
    order = list(range(len(ATTRIBUTES)))
    rng.shuffle(order)
    sentences = [f"This is a report about {person['name']}."]
    for i in order:
        attr = ATTRIBUTES[i]
        template = attr.answer if rng.random() < 0.5 else attr.paraphrase
        sentences.append(template.format(name=person["name"], value=person[attr.key]))
    return sentences


def embedded_corpus_documents(
    n_people: int, forget_fraction: float = 0.1, seed: int = 0
) -> dict[str, list[dict]]:
    """The people of the corpus, by role: ``{"forget", "retain", "holdout"}`` -> people,
    each person with ``sentences`` (its report). ``max(1, round(forget_fraction *
    n_people))`` people are forgotten and as many holdout people are made.

    Raises:
        ValueError: ``n_people < 2`` or a fraction that leaves nobody to retain.
    """
    if isinstance(n_people, bool) or not isinstance(n_people, int) or n_people < 2:
        raise ValueError(f"n_people must be an integer >= 2, got {n_people!r}")
    if not 0.0 < float(forget_fraction) < 1.0:
        raise ValueError(f"forget_fraction must be in (0, 1), got {forget_fraction!r}")
    n_forget = max(1, round(forget_fraction * n_people))
    if n_forget >= n_people:
        raise ValueError(
            f"forget_fraction={forget_fraction} forgets all {n_people} people; lower it"
        )
    people = make_people(n_people + n_forget, seed)
    rng = random.Random(f"corpus_reports:{seed}")
    for person in people:
        person["sentences"] = person_report(person, rng)
    forgotten = set(random.Random(f"corpus_split:{seed}").sample(range(n_people), n_forget))
    return {
        "forget": [p for p in people[:n_people] if p["id"] in forgotten],
        "retain": [p for p in people[:n_people] if p["id"] not in forgotten],
        "holdout": people[n_people:],
    }


def _facts(people: list[dict]) -> list[tuple[dict, object]]:
    return [(person, attr) for person in people for attr in ATTRIBUTES]


def _qa(people: list[dict]) -> list[dict]:
    return [
        {"question": attr.question.format(name=p["name"]), "answer": str(p[attr.key])}
        for p, attr in _facts(people)
    ]


def _mc(people: list[dict], rng: random.Random) -> list[dict]:
    items = []
    for p, attr in _facts(people):
        value = p[attr.key]
        wrong = rng.sample([v for v in attr.values if v != value], 3)
        choices = [str(v) for v in [value, *wrong]]
        order = list(range(4))
        rng.shuffle(order)
        items.append(
            {
                "question": attr.question.format(name=p["name"]),
                "choices": [choices[j] for j in order],
                "answer": order.index(0),
            }
        )
    return items


def _split_icl(qa: list[dict], rng: random.Random) -> tuple[list[dict], list[dict]]:
    """(evaluation QA, in-context QA): ``N_ICL`` pairs drawn out of ``qa``."""
    picked = set(rng.sample(range(len(qa)), min(N_ICL, len(qa) - 1)))
    return [r for i, r in enumerate(qa) if i not in picked], [qa[i] for i in sorted(picked)]


def write_embedded_corpus(
    out_dir: str | Path, n_people: int = 40, forget_fraction: float = 0.1, seed: int = 0
) -> dict[str, int]:
    """Write the embedded corpus into ``out_dir`` in the prepared corpus layout
    (``forget.jsonl``, ``retain.jsonl``, ``knowmem/``, ``verbmem/``, ``privleak/``,
    ``mc/``, ``corpus.json``; see the module docstring). Training defaults: one example
    per report (``text_chunking: document``), ``max_length`` 128. Returns record counts.
    """
    roles = embedded_corpus_documents(n_people, forget_fraction, seed)
    docs = {role: [" ".join(p["sentences"]) for p in people] for role, people in roles.items()}
    rng = random.Random(f"corpus_eval:{seed}")
    forget_qa, forget_icl = _split_icl(_qa(roles["forget"]), rng)
    retain_qa, retain_icl = _split_icl(_qa(roles["retain"]), rng)
    n_forget = len(docs["forget"])
    muse_eval = {
        "knowmem_forget": forget_qa,
        "knowmem_forget_icl": forget_icl,
        "knowmem_retain": retain_qa,
        "knowmem_retain_icl": retain_icl,
        "verbmem_forget": [
            {
                "prompt": " ".join(p["sentences"][:VERBMEM_PROMPT_SENTENCES]),
                "gt": " ".join(p["sentences"][VERBMEM_PROMPT_SENTENCES:]),
            }
            for p in roles["forget"]
        ],
        "privleak_forget": docs["forget"],
        "privleak_retain": docs["retain"][:n_forget],
        "privleak_holdout": docs["holdout"],
    }
    mc = {"forget": _mc(roles["forget"], rng), "retain": _mc(roles["retain"], rng)}
    write_corpus(
        out_dir,
        "corpus-embedded",
        f"embedded(n_people={n_people}, forget_fraction={forget_fraction}, seed={seed})",
        docs["forget"],
        docs["retain"],
        training_defaults("corpus-embedded"),
        forget_from="reports of the forget people",
        retain_from="reports of the retain people",
        muse_eval=muse_eval,
        mc=mc,
        extra={
            "people": {role: [p["name"] for p in people] for role, people in roles.items()},
            "seed": seed,
        },
    )
    return validate_corpus(out_dir)
