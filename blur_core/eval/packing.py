"""Shared-prefix, packed teacher-forced scoring on a prefix tree.

A :class:`ScoreRequest` is one prefix (a prompt or context) with several continuations
scored after it (TOFU's answer, paraphrase and perturbed answers of one question; the
choices of a multiple-choice item). Its *segment* is the prefix tree (:class:`PrefixTree`)
of its token sequences: the prefix once, then every continuation's input tokens (all but
its last token), with the starts that continuations share stored once. For the prefix
``p0 p1`` and the continuations ``a b c`` and ``a d``::

    p0 - p1 - a - b              (c is predicted at b, d at a, a at p1)
                                 segment: p0 p1 a b   positions 0 1 2 3

A node attends to its ancestors and itself (the tree mask), never to a sibling branch,
and its position id is its depth, so every scored log-probability is that of ``prefix +
continuation`` run alone (equal within fp32 noise). ``log p(c_0)`` is read at the
prefix's last node, ``log p(c_j)`` at the node of ``c_{j-1}``. Each distinct node is
computed once: TOFU's answer, paraphrase and five perturbed answers often start with the
same words. Segments are packed first-fit-decreasing into rows of at most
``row_tokens`` (a longer segment gets a row of its own), which are block-diagonal, and
rows are grouped longest first into batches of at most ``batch_tokens`` (padded rows x
width), so padding is only the width difference of similarly long rows; a padding
position attends only to itself. The LM head runs only at the scored positions.

The mask is passed as a 4D additive float tensor ``[B, 1, T, T]``, which transformers'
``eager`` and ``sdpa`` attention use as is (:func:`supports_packed`).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch

from blur_core.config import require_int

__all__ = [
    "PACKED_ATTENTION",
    "PackedBatch",
    "PrefixTree",
    "ScoreRequest",
    "group_by_prefix",
    "pack_segments",
    "plan_batches",
    "prefix_tree",
    "score_packed",
    "scored_logits",
    "supports_packed",
    "token_budget_batches",
]

PACKED_ATTENTION: tuple[str, ...] = ("eager", "sdpa")
"""Attention implementations that take a custom 4D mask as is."""


@dataclass(frozen=True)
class PrefixTree:
    """The prefix tree of one prefix and its continuations' input tokens.

    ``tokens[i]`` is node ``i``'s token id, ``parents[i]`` its parent node (``-1`` for the
    root, the prefix's first token); parents come before their children. ``scored[k]``
    lists, for continuation ``k``, the node whose output predicts each of its tokens:
    the prefix's last node for ``c_0``, the node of ``c_{j-1}`` for ``c_j``.
    """

    tokens: tuple[int, ...]
    parents: tuple[int, ...]
    scored: tuple[tuple[int, ...], ...]

    def depths(self) -> list[int]:
        """Each node's depth (the root's is 0): its position id."""
        depth: list[int] = []
        for parent in self.parents:
            depth.append(0 if parent < 0 else depth[parent] + 1)
        return depth


def prefix_tree(prefix: Sequence[int], continuations: Sequence[Sequence[int]]) -> PrefixTree:
    """The :class:`PrefixTree` of ``prefix`` (a chain) and ``continuations`` (each
    continuation's tokens but its last hang off the prefix's last node, sharing the nodes
    of any start they have in common with an earlier continuation)."""
    tokens = [int(t) for t in prefix]
    parents = list(range(-1, len(tokens) - 1))
    children: dict[tuple[int, int], int] = {}
    last_prefix = len(tokens) - 1
    scored = []
    for cont in continuations:
        node, predictors = last_prefix, [last_prefix]
        for token in cont[:-1]:
            key = (node, int(token))
            if key not in children:
                children[key] = len(tokens)
                tokens.append(int(token))
                parents.append(node)
            node = children[key]
            predictors.append(node)
        scored.append(tuple(predictors))
    return PrefixTree(tuple(tokens), tuple(parents), tuple(scored))


@dataclass(frozen=True)
class ScoreRequest:
    """One prefix and the continuations scored after it (token ids, each non-empty)."""

    prefix: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if not self.prefix:
            raise ValueError("a ScoreRequest needs a non-empty prefix")
        if not self.continuations:
            raise ValueError("a ScoreRequest needs at least one continuation")
        empty = next((k for k, c in enumerate(self.continuations) if not c), None)
        if empty is not None:
            raise ValueError(f"continuation {empty} of a ScoreRequest is empty")

    @cached_property
    def tree(self) -> PrefixTree:
        """The request's :class:`PrefixTree` (built once)."""
        return prefix_tree(self.prefix, self.continuations)

    @property
    def segment_length(self) -> int:
        """Tokens of the packed segment: the prefix tree's nodes, at most
        ``P + sum_k (n_k - 1)`` (equal when no two continuations start alike)."""
        return len(self.tree.tokens)


def group_by_prefix(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
) -> tuple[list[ScoreRequest], list[tuple[int, int]]]:
    """Group ``(prefix, continuation)`` pairs with identical prefixes into requests.

    Returns ``(requests, where)``: ``where[i] = (r, k)`` says pair ``i`` is continuation
    ``k`` of ``requests[r]``. Requests come in order of first appearance.
    """
    index: dict[tuple[int, ...], int] = {}
    conts: list[list[tuple[int, ...]]] = []
    prefixes: list[tuple[int, ...]] = []
    where = []
    for prefix, cont in pairs:
        key = tuple(int(t) for t in prefix)
        if key not in index:
            index[key] = len(prefixes)
            prefixes.append(key)
            conts.append([])
        r = index[key]
        where.append((r, len(conts[r])))
        conts[r].append(tuple(int(t) for t in cont))
    requests = [ScoreRequest(p, tuple(c)) for p, c in zip(prefixes, conts)]
    return requests, where


def pack_segments(lengths: Sequence[int], row_tokens: int) -> list[list[int]]:
    """First-fit-decreasing packing of segment ``lengths`` into rows of ``<= row_tokens``.

    A segment longer than ``row_tokens`` gets a row of its own. Returns the rows as lists
    of segment indices (longest segment first within a row).

    Raises:
        ValueError: ``row_tokens`` is not a positive integer, or a length is < 1.
    """
    require_int("row_tokens", row_tokens)
    bad = next((i for i, n in enumerate(lengths) if n < 1), None)
    if bad is not None:
        raise ValueError(f"segment {bad} has length {lengths[bad]}; segments need >= 1 token")
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        slot = next((r for r, room in enumerate(free) if room >= lengths[i]), None)
        if slot is None:
            rows.append([i])
            free.append(row_tokens - lengths[i])
        else:
            rows[slot].append(i)
            free[slot] -= lengths[i]
    return rows


def token_budget_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Indices grouped longest first into batches whose padded size ``len(batch) * max
    length`` stays within ``batch_tokens`` (a batch always takes at least one index).

    Raises:
        ValueError: ``batch_tokens`` is not a positive integer.
    """
    require_int("batch_tokens", batch_tokens)
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        # longest first, so the batch's width is its first row's length
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


@dataclass(frozen=True)
class PackedBatch:
    """One forward pass of packed segments.

    ``input_ids``, ``position_ids`` ``[B, T]``; ``allowed`` ``[B, T, T]`` (query, key)
    bool; ``keep`` ``[B, T]`` the positions whose logits are needed; ``flat_pos`` ``[N]``
    the row-major position (``b * T + t``) of each scored token and ``targets`` ``[N]``
    its token id; ``owner`` ``[N]`` the ``(request, continuation)`` slot it counts for,
    numbered ``slot_base[request] + continuation``; ``real_tokens`` the non-padding count.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    allowed: torch.Tensor
    keep: torch.Tensor
    flat_pos: torch.Tensor
    targets: torch.Tensor
    owner: torch.Tensor
    real_tokens: int

    @property
    def padded_tokens(self) -> int:
        """``B * T``: the tokens the forward pass processes."""
        return int(self.input_ids.numel())


def _layout_row(
    requests: Sequence[ScoreRequest], segments: Sequence[int], slot_base: Sequence[int]
) -> tuple[list[int], list[int], list[int], list[tuple[int, int, int]]]:
    """Token ids, position ids (depths), parents (row indices; ``-1`` for a segment's
    root) and ``(position, target, slot)`` of the scored tokens of one row."""
    ids: list[int] = []
    pos: list[int] = []
    parents: list[int] = []
    scored: list[tuple[int, int, int]] = []
    for s in segments:
        req, start = requests[s], len(ids)
        tree = req.tree
        ids += tree.tokens
        pos += tree.depths()
        parents += [-1 if p < 0 else start + p for p in tree.parents]
        for k, (cont, nodes) in enumerate(zip(req.continuations, tree.scored)):
            scored += [(start + n, t, slot_base[s] + k) for n, t in zip(nodes, cont)]
    return ids, pos, parents, scored


def _tree_mask(parents: Sequence[int], width: int) -> torch.Tensor:
    """``[width, width]`` bool: query ``i`` may attend to key ``j`` iff ``j`` is ``i`` or
    one of its ancestors. Positions past ``len(parents)`` (padding) see only themselves."""
    allowed = torch.eye(width, dtype=torch.bool)
    for i, parent in enumerate(parents):
        if parent >= 0:  # parents come first: their rows are complete
            allowed[i] |= allowed[parent]
    return allowed


def _build_batch(
    requests: Sequence[ScoreRequest],
    rows: Sequence[Sequence[int]],
    slot_base: Sequence[int],
    pad_token_id: int,
) -> PackedBatch:
    """The tensors of one batch of packed rows (right-padded to the longest row)."""
    laid = [_layout_row(requests, row, slot_base) for row in rows]
    width = max(len(ids) for ids, *_ in laid)
    shape = (len(rows), width)
    input_ids = torch.full(shape, int(pad_token_id), dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    allowed = torch.zeros((len(rows), width, width), dtype=torch.bool)
    keep = torch.zeros(shape, dtype=torch.bool)
    flat_pos, targets, owner = [], [], []
    for b, (ids, pos, parents, scored) in enumerate(laid):
        n = len(ids)
        input_ids[b, :n] = torch.as_tensor(ids, dtype=torch.long)
        position_ids[b, :n] = torch.as_tensor(pos, dtype=torch.long)
        allowed[b] = _tree_mask(parents, width)
        for p, t, slot in scored:
            keep[b, p] = True
            flat_pos.append(b * width + p)
            targets.append(t)
            owner.append(slot)
    return PackedBatch(
        input_ids=input_ids,
        position_ids=position_ids,
        allowed=allowed,
        keep=keep,
        flat_pos=torch.tensor(flat_pos, dtype=torch.long),
        targets=torch.tensor(targets, dtype=torch.long),
        owner=torch.tensor(owner, dtype=torch.long),
        real_tokens=sum(len(ids) for ids, *_ in laid),
    )


def plan_batches(
    requests: Sequence[ScoreRequest],
    pad_token_id: int,
    row_tokens: int = 256,
    batch_tokens: int = 2048,
) -> list[PackedBatch]:
    """All :class:`PackedBatch` es for ``requests`` (see the module docstring); slot
    ``slot_base[r] + k`` is continuation ``k`` of request ``r``, in request order."""
    slot_base = [0]
    for req in requests[:-1]:
        slot_base.append(slot_base[-1] + len(req.continuations))
    rows = pack_segments([req.segment_length for req in requests], row_tokens)
    row_lengths = [sum(requests[s].segment_length for s in row) for row in rows]
    return [
        _build_batch(requests, [rows[r] for r in batch], slot_base, pad_token_id)
        for batch in token_budget_batches(row_lengths, batch_tokens)
    ]


def supports_packed(model) -> bool:
    """Whether ``model`` takes a custom 4D attention mask (transformers' ``eager`` or
    ``sdpa`` attention, read from ``model.config._attn_implementation``)."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) in PACKED_ATTENTION


def _accepts_logits_to_keep(model) -> bool:
    """Whether ``model.forward`` takes ``logits_to_keep`` (transformers causal LMs do)."""
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def scored_logits(model, keep: torch.Tensor, **inputs) -> torch.Tensor:
    """Logits ``[P, V]`` at the ``P`` True positions of ``keep [B, T]`` (row-major order).

    With ``logits_to_keep=keep`` (a boolean mask; transformers >= 5 projects only those
    hidden states onto the vocabulary) the LM head runs on ``P`` rows instead of
    ``B * T``; otherwise, or if the model returns another shape, the full logits
    ``[B, T, V]`` are indexed. ``inputs`` go to the model as keyword arguments.
    """
    if _accepts_logits_to_keep(model):
        logits = model(**inputs, logits_to_keep=keep).logits
        if logits.ndim == 2 and logits.shape[0] == int(keep.sum()):
            return logits
    return model(**inputs).logits[keep]


def _additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[B, 1, T, T]``: 0 where attention is allowed, the dtype's minimum elsewhere."""
    zero = torch.zeros((), dtype=dtype)
    blocked = torch.tensor(torch.finfo(dtype).min, dtype=dtype)
    return torch.where(allowed, zero, blocked)[:, None]


def _model_dtype(model) -> torch.dtype:
    param = next(iter(model.parameters()), None)
    return param.dtype if param is not None and param.is_floating_point() else torch.float32


@torch.no_grad()
def score_packed(
    model,
    requests: Sequence[ScoreRequest],
    pad_token_id: int,
    row_tokens: int = 256,
    batch_tokens: int = 2048,
) -> tuple[list[list[float]], list[list[int]]]:
    """Sum of log-probabilities and token count of every continuation of every request.

    ``sums[r][k] = sum_j log p(c_j | prefix_r, c_<j)`` (log-softmax in fp32, summed in
    fp64) with ``c = requests[r].continuations[k]``; ``counts[r][k] = len(c)``.

    Raises:
        ValueError: ``model`` does not take a 4D attention mask (:func:`supports_packed`),
            or a bad ``row_tokens`` / ``batch_tokens``.
    """
    if not supports_packed(model):
        impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
        raise ValueError(
            f"packed scoring needs an attention implementation in {list(PACKED_ATTENTION)} "
            f"(it takes a 4D mask), got {impl!r}; use the padded path"
        )
    n_slots = sum(len(r.continuations) for r in requests)
    totals = torch.zeros(n_slots, dtype=torch.float64)
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = _model_dtype(model)
    model.eval()
    for batch in plan_batches(requests, pad_token_id, row_tokens, batch_tokens):
        keep = batch.keep.to(device)
        picked = scored_logits(
            model,
            keep,
            input_ids=batch.input_ids.to(device),
            position_ids=batch.position_ids.to(device),
            attention_mask=_additive_mask(batch.allowed, dtype).to(device),
        )
        # row of (b, t) in the row-major list of kept positions
        row_of = (torch.cumsum(batch.keep.flatten().long(), 0) - 1)[batch.flat_pos]
        logprobs = torch.log_softmax(picked.float(), dim=-1)
        token_lp = logprobs[row_of.to(device), batch.targets.to(device)].double().cpu()
        totals.index_add_(0, batch.owner, token_lp)
    flat = totals.tolist()
    sums, counts, at = [], [], 0
    for req in requests:
        k = len(req.continuations)
        sums.append(flat[at : at + k])
        counts.append([len(c) for c in req.continuations])
        at += k
    return sums, counts
