"""Quick teacher-forced scores of models on QA files (not the benchmark metrics).

Per file and model: mean answer NLL (per-example token mean, then mean over examples),
mean answer probability exp(-NLL_i), and teacher-forced token accuracy (share of answer
tokens that are the argmax prediction). Used by ``python -m blur_core score`` and the
demo to show what unlearning did; the TOFU/MUSE/WMDP metrics live in the evaluation stage.
"""

from __future__ import annotations

import torch

from blur_core.data import QADataset, load_records, pad_collate
from blur_core.losses import IGNORE_INDEX, sequence_logprobs
from blur_core.models import load_model, load_tokenizer

__all__ = ["format_table", "score_models", "score_qa"]


@torch.no_grad()
def score_qa(
    model,
    tokenizer,
    records: list[dict],
    batch_size: int = 32,
    max_length: int = 256,
    source: str = "<records>",
) -> dict[str, float]:
    ds = QADataset(records, tokenizer, max_length=max_length, source=source)
    model.eval()
    nll_sum = prob_sum = 0.0
    correct = total = 0
    device = next(model.parameters()).device
    for start in range(0, len(ds), batch_size):
        batch = pad_collate(
            [ds[i] for i in range(start, min(start + batch_size, len(ds)))], tokenizer.pad_token_id
        )
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        seq, n = sequence_logprobs(logits, batch["labels"])
        nll = -seq / n.clamp_min(1)
        nll_sum += float(nll.sum())
        prob_sum += float(torch.exp(-nll).sum())
        labels = batch["labels"][:, 1:]
        mask = labels != IGNORE_INDEX
        correct += int(((logits[:, :-1].argmax(-1) == labels) & mask).sum())
        total += int(mask.sum())
    n_ex = len(ds)
    return {
        "n": n_ex,
        "nll": nll_sum / n_ex,
        "prob": prob_sum / n_ex,
        "token_acc": correct / max(total, 1),
    }


def score_models(
    models: list[str], data: dict[str, str], batch_size: int = 32, max_length: int = 256
) -> list[dict]:
    rows = []
    records = {name: load_records(path) for name, path in data.items()}
    for path in models:
        tok = load_tokenizer(path)
        model = load_model(path)
        for name, recs in records.items():
            rows.append(
                {
                    "model": path,
                    "data": name,
                    **score_qa(model, tok, recs, batch_size, max_length, source=data[name]),
                }
            )
    return rows


def format_table(rows: list[dict]) -> str:
    head = "| model | data | n | NLL | P(answer) | token acc |\n|---|---|---:|---:|---:|---:|"
    lines = [
        f"| {r['model']} | {r['data']} | {r['n']} | {r['nll']:.3f} | {r['prob']:.3f} | {r['token_acc']:.3f} |"
        for r in rows
    ]
    return "\n".join([head, *lines])
