"""Question/answer examples tokenised so that the loss falls on answer tokens only.

One example is ``prompt ids + answer ids + [eos]``; ``labels`` is ``-100`` on the
prompt and equals the ids on the answer and EOS, which is what TOFU-style answer
NLL/probability, IdK fine-tuning and the forget/retain losses need.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from blur_core.data.collate import IGNORE_INDEX

AnswerOverride = Callable[[int, Mapping], str]

IDK_ANSWERS: tuple[str, ...] = (
    "I don't know.",
    "I'm not sure about that.",
    "I have no idea.",
    "I can't answer that.",
    "I don't have that information.",
    "That is not something I know.",
    "I am unable to answer that question.",
    "I'm afraid I don't know.",
    "Sorry, I don't know the answer.",
    "I cannot say.",
)


def idk_answer(index: int, record: Mapping | None = None) -> str:
    """Deterministic refusal for example ``index``: ``IDK_ANSWERS[index % len(IDK_ANSWERS)]``.

    ``record`` is accepted (and ignored) so that this function can be passed as
    ``QADataset(answer_override=idk_answer)``.
    """
    return IDK_ANSWERS[index % len(IDK_ANSWERS)]


def load_refusals(path: str | Path) -> tuple[str, ...]:
    """The refusal set of an ``idk.jsonl`` file in TOFU's / open-unlearning's layout: one
    refusal per line, plain text (open-unlearning reads it with ``readlines()`` and
    ``strip()``); a line that is a JSON string literal (``"I don't know."``) is decoded,
    blank lines are skipped.

    Raises:
        FileNotFoundError: no such file (names it).
        ValueError: the file holds no refusal (names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"refusal file not found: {str(path)!r}")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if text.startswith('"'):
            try:
                decoded = json.loads(text)
            except json.JSONDecodeError:
                decoded = None
            text = decoded if isinstance(decoded, str) else text
        if text:
            out.append(text)
    if not out:
        raise ValueError(f"refusal file {str(path)!r} holds no refusal (one per line)")
    return tuple(out)


def refusal_answer(refusals: Sequence[str]) -> AnswerOverride:
    """``answer_override`` giving example ``index`` the refusal ``refusals[index % n]``
    (deterministic, so a resumed run sees the same answers; open-unlearning draws one at
    random per access)."""
    if not refusals:
        raise ValueError("refusal_answer needs at least one refusal")
    pool = tuple(refusals)
    return lambda index, record=None: pool[index % len(pool)]


def alternate_answers(
    records: Sequence[Mapping],
    key: str = "alternate",
    alternates: Sequence[Mapping] | None = None,
    source: str = "forget set",
    alt_source: str = "alternate file",
) -> list[str]:
    """The alternate (AltPO) answer of every forget record: ``alternates[i][key]`` when a
    separate file is given (it must hold one record per forget record, in the same order,
    with the same ``question`` where it has one), else ``records[i][key]``.

    Raises:
        ValueError: a missing field, a length or question mismatch (names the file, the
            record and the key).
    """
    if alternates is None:
        alternates, alt_source = records, source
    elif len(alternates) != len(records):
        raise ValueError(
            f"{alt_source} holds {len(alternates)} records but {source} holds {len(records)}; "
            "it needs one alternate answer per forget record, in the same order"
        )
    out = []
    for i, (rec, alt) in enumerate(zip(records, alternates)):
        if key not in alt:
            raise ValueError(
                f"{alt_source}: record {i} has no alternate answer field {key!r} (fields: "
                f"{sorted(alt)}); set data.alternate_file / data.alternate_key"
            )
        if alt is not rec and "question" in alt and alt["question"] != rec.get("question"):
            raise ValueError(
                f"{alt_source}: record {i} is for question {_short(str(alt['question']))!r} "
                f"but {source} record {i} asks {_short(str(rec.get('question')))!r}"
            )
        out.append(str(alt[key]))
    return out


@dataclass(frozen=True)
class QAFormat:
    """How a QA record becomes a prompt and an answer.

    Attributes:
        question_key / answer_key: record fields holding the question and answer.
        prompt_template: ``str.format`` template with ``{question}``, used when no chat
            template is applied.
        answer_prefix: text put before the answer when no chat template is applied
            (typically a space so that the answer starts a new word).
        use_chat_template: ``True``/``False`` force it; ``None`` uses the tokenizer's
            chat template iff ``tokenizer.chat_template`` is set.
        system_prompt: with a chat template, a system message put before the question.
        chat_template_kwargs: extra variables of the chat template as ``(name, value)``
            pairs (e.g. Llama 3's ``date_string``).
    """

    question_key: str = "question"
    answer_key: str = "answer"
    prompt_template: str = "Question: {question}\nAnswer:"
    answer_prefix: str = " "
    use_chat_template: bool | None = None
    system_prompt: str | None = None
    chat_template_kwargs: tuple[tuple[str, str], ...] = ()

    def wants_chat_template(self, tokenizer) -> bool:
        """Whether this format applies ``tokenizer``'s chat template."""
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if self.use_chat_template is None:
            return has_template
        if self.use_chat_template and not has_template:
            raise ValueError(
                "QAFormat(use_chat_template=True) but the tokenizer has no chat_template"
            )
        return self.use_chat_template


# Named prompt formats: what a model was fine-tuned with, so that training and evaluation of
# a published checkpoint use the same prompt (``data.prompt_format`` in a run config,
# ``--prompt-format`` of the evaluation commands, ``prompt_format`` in the pipeline config).
PROMPT_FORMATS: dict[str, QAFormat] = {
    # the tokenizer's chat template when it has one, else "Question: ...\nAnswer:" (default)
    "auto": QAFormat(),
    # "Question: {question}\nAnswer:" + " answer", never a chat template
    "plain": QAFormat(use_chat_template=False),
    # the tokenizer's chat template, no system message
    "chat": QAFormat(use_chat_template=True),
    # open-unlearning's Llama 3.x Instruct TOFU models (configs/model/Llama-3.2-1B-Instruct.yaml
    # at locuslab/open-unlearning d3d7cf9: apply_chat_template, system prompt, date_string)
    "open-unlearning-llama3": QAFormat(
        use_chat_template=True,
        system_prompt="You are a helpful assistant.",
        chat_template_kwargs=(("date_string", "10 Apr 2025"),),
    ),
    # the original TOFU Llama-2-7b-chat models and open-unlearning's Llama-2-7b-chat config:
    # "[INST] {question} [/INST]" with the answer right after it (asst_start_tag "")
    "tofu-llama2": QAFormat(
        prompt_template="[INST] {question} [/INST]", answer_prefix="", use_chat_template=False
    ),
}


def prompt_format(name: str) -> QAFormat:
    """The named prompt format (``PROMPT_FORMATS``); ``ValueError`` listing the names."""
    try:
        return PROMPT_FORMATS[name]
    except KeyError:
        raise ValueError(
            f"unknown prompt format {name!r}; known formats: {sorted(PROMPT_FORMATS)}"
        ) from None


def _as_id_list(encoded) -> list[int]:
    """Token ids from whatever a tokenizer call returned (list, dict or BatchEncoding)."""
    if isinstance(encoded, Mapping) or hasattr(encoded, "input_ids"):
        encoded = encoded["input_ids"]
    if isinstance(encoded, torch.Tensor):
        encoded = encoded.tolist()
    ids = list(encoded)
    if ids and isinstance(ids[0], (list, tuple)):
        # a batch of one conversation
        if len(ids) != 1:
            raise ValueError(f"expected one sequence of token ids, got a batch of {len(ids)}")
        ids = list(ids[0])
    return [int(t) for t in ids]


def encode_prompt(tokenizer, question: str, fmt: QAFormat = QAFormat()) -> list[int]:
    """Token ids of the prompt for ``question`` (chat template or ``fmt.prompt_template``).

    Without a chat template the prompt is tokenised with ``add_special_tokens=True``,
    so BOS is prepended when the tokenizer defines it.
    """
    if fmt.wants_chat_template(tokenizer):
        messages = [{"role": "user", "content": question}]
        if fmt.system_prompt:
            messages.insert(0, {"role": "system", "content": fmt.system_prompt})
        out = tokenizer.apply_chat_template(
            messages,
            add_generation_prompt=True,
            tokenize=True,
            **dict(fmt.chat_template_kwargs),
        )
        return _as_id_list(out)
    text = fmt.prompt_template.format(question=question)
    return _as_id_list(tokenizer(text, add_special_tokens=True))


def encode_answer(tokenizer, answer: str, fmt: QAFormat = QAFormat()) -> list[int]:
    """Token ids of ``answer`` (no special tokens, no EOS); ``fmt.answer_prefix`` is
    prepended unless a chat template is in use."""
    text = answer if fmt.wants_chat_template(tokenizer) else fmt.answer_prefix + answer
    return _as_id_list(tokenizer(text, add_special_tokens=False))


def encode_qa(
    tokenizer,
    question: str,
    answer: str,
    fmt: QAFormat = QAFormat(),
    max_length: int = 256,
) -> dict[str, list[int]]:
    """Tokenise one QA pair with labels on the answer (and EOS) only.

    Returns ``{"input_ids": prompt + answer + [eos], "labels": [-100]*len(prompt) +
    answer + [eos]}`` (EOS only if ``tokenizer.eos_token_id`` is set), truncated from
    the right to at most ``max_length`` tokens.

    Raises:
        ValueError: ``max_length < 2``, or the prompt alone has ``>= max_length``
            tokens so no answer token would survive truncation.
    """
    if not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an integer >= 2, got {max_length!r}")
    prompt_ids = encode_prompt(tokenizer, question, fmt)
    answer_ids = encode_answer(tokenizer, answer, fmt)
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None:
        answer_ids = [*answer_ids, int(eos)]
    if not answer_ids:
        raise ValueError(
            f"answer {answer!r} tokenised to no tokens (question {_short(question)!r})"
        )
    if len(prompt_ids) >= max_length:
        raise ValueError(
            f"prompt of example {_short(question)!r} has {len(prompt_ids)} tokens, "
            f"which leaves no room for the answer within max_length={max_length}"
        )
    input_ids = (prompt_ids + answer_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + answer_ids)[:max_length]
    return {"input_ids": input_ids, "labels": labels}


def _short(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters (with an ellipsis) for error messages."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class QADataset(Dataset):
    """Eagerly tokenised QA examples.

    Item ``i`` is ``{"input_ids": LongTensor[T], "labels": LongTensor[T], "index": i}``
    with labels ``-100`` on the prompt. ``answer_override(index, record) -> str``
    replaces the record's answer (e.g. :func:`idk_answer` for IdK unlearning).
    ``preferred_answer(index, record) -> str`` adds a second answer to the same question
    (DPO's chosen answer: a refusal or an alternate answer) as ``alt_input_ids`` /
    ``alt_labels``, which :func:`~blur_core.data.collate.pad_collate` pads alongside.
    """

    def __init__(
        self,
        records: Sequence[Mapping],
        tokenizer,
        max_length: int = 256,
        fmt: QAFormat = QAFormat(),
        answer_override: AnswerOverride | None = None,
        source: str | None = None,
        preferred_answer: AnswerOverride | None = None,
    ):
        self.records = list(records)
        self.source = source  # file name used in error messages
        self.fmt = fmt
        self.max_length = max_length
        self._items = [
            self._encode(i, record, tokenizer, answer_override)
            for i, record in enumerate(self.records)
        ]
        if preferred_answer is not None:
            for i, (item, record) in enumerate(zip(self._items, self.records)):
                alt = self._encode(i, record, tokenizer, preferred_answer)
                item["alt_input_ids"], item["alt_labels"] = alt["input_ids"], alt["labels"]

    def _encode(self, index, record, tokenizer, answer_override) -> dict[str, torch.Tensor]:
        """Tokenise record ``index`` into tensors."""
        fmt = self.fmt
        if fmt.question_key not in record:
            raise ValueError(
                f"{self.source or 'QA data'}: record {index} has no question field "
                f"{fmt.question_key!r} (fields: {sorted(record)})"
            )
        if answer_override is not None:
            answer = answer_override(index, record)
        elif fmt.answer_key in record:
            answer = record[fmt.answer_key]
        else:
            raise ValueError(
                f"{self.source or 'QA data'}: record {index} has no answer field "
                f"{fmt.answer_key!r} (fields: {sorted(record)})"
            )
        enc = encode_qa(tokenizer, str(record[fmt.question_key]), str(answer), fmt, self.max_length)
        return {
            "input_ids": torch.tensor(enc["input_ids"], dtype=torch.long),
            "labels": torch.tensor(enc["labels"], dtype=torch.long),
        }

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> dict:
        if not -len(self._items) <= i < len(self._items):
            raise IndexError(f"index {i} out of range for QADataset of size {len(self._items)}")
        i = i % len(self._items)
        return {**self._items[i], "index": i}
