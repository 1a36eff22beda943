"""Unit tests for the rival forget losses: DPO, UNDIAL, WGA, SatImp, CE-U.

Hand-computed values use the toy batch of ``test_losses`` (logits are logs of chosen
probabilities, so every softmax is known) and ``math`` only. The reference checks
compare against open-unlearning's formulas, re-implemented below from
locuslab/open-unlearning@d3d7cf9 (``src/trainer/utils.py``: ``compute_batch_nll``,
``compute_dpo_loss``, ``compute_undial_loss``, ``compute_wga_loss``,
``compute_satimp_loss``; ``src/trainer/unlearn/ceu.py``: ``compute_batch_ceu``,
``cross_entropy_unlearning_loss``; read with the ``fetch`` tool) with the model call
replaced by given logits, on random toy tensors where every answer position is scored
and the examples have equal length (the one case in which their global token mean and
this library's per-example mean agree).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from blur_core import losses as L
from tests.unit.test_losses import IGN, PROBS, close, sigmoid, toy

# the toy's scored tokens: (example, position, label) -> probability of the label
P00, P01, P10 = 0.5, 0.8, 0.3


def rows(b: int, t: int) -> list[float]:
    return PROBS[b][t]


# ---------------------------------------------------------------------------
# DPO
# ---------------------------------------------------------------------------

# rejected answers on the same logits: example 0 scores position 0 -> 1 and 1 -> 0,
# example 1 scores position 0 -> 0 and position 1 -> 2
REJ_LABELS = [[IGN, 1, 0], [IGN, 0, 2]]
REJ_S = [math.log(0.25) + math.log(0.1), math.log(0.2) + math.log(0.2)]
CHO_S = [math.log(P00) + math.log(P01), math.log(P10)]


def dpo_toy():
    logits, labels = toy()
    return logits, labels, logits.clone(), torch.tensor(REJ_LABELS)


def test_dpo_hand_value():
    cl, clab, rl, rlab = dpo_toy()
    ref_w, ref_l = [-1.0, -2.0], [-3.0, -0.5]
    beta = 0.5
    expected = 0.0
    for i in range(2):
        margin = (CHO_S[i] - ref_w[i]) - (REJ_S[i] - ref_l[i])
        expected += -(2 / beta) * math.log(sigmoid(beta * margin)) / 2
    got = L.dpo_loss(cl, clab, rl, rlab, torch.tensor(ref_w), torch.tensor(ref_l), beta)
    assert got.dtype == torch.float32 and close(got, expected)


def test_dpo_at_reference_is_2_log2_over_beta_and_reduces_to_npo():
    cl, clab, rl, rlab = dpo_toy()
    w, _ = L.sequence_logprobs(cl, clab)
    lo, _ = L.sequence_logprobs(rl, rlab)
    assert close(L.dpo_loss(cl, clab, rl, rlab, w, lo, 0.2), (2 / 0.2) * math.log(2))
    # the chosen answer at its reference: DPO is NPO on the rejected answer
    ref_l = torch.tensor([-1.0, -4.0])
    dpo = L.dpo_loss(cl, clab, rl, rlab, w, ref_l, 0.3)
    assert close(dpo, L.npo_loss(rl, rlab, ref_l, 0.3))


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    cl, clab, rl, rlab = dpo_toy()
    cl.requires_grad_(True)
    rl.requires_grad_(True)
    zero = torch.zeros(2)
    L.dpo_loss(cl, clab, rl, rlab, zero, zero, 1.0).backward()
    # descent direction -grad: chosen label logits up, rejected label logits down
    assert float(cl.grad[0, 0, 0]) < 0 and float(cl.grad[1, 0, 1]) < 0
    assert float(rl.grad[0, 0, 1]) > 0 and float(rl.grad[1, 0, 0]) > 0


def test_dpo_empty_example_counts_as_zero():
    cl, clab, rl, rlab = dpo_toy()
    rlab[1] = IGN
    zero = torch.zeros(2)
    got = L.dpo_loss(cl, clab, rl, rlab, zero, zero, 1.0)
    expected = -2 * math.log(sigmoid(CHO_S[0] - REJ_S[0])) / 2
    assert close(got, expected)


def test_dpo_validation():
    cl, clab, rl, rlab = dpo_toy()
    zero = torch.zeros(2)
    with pytest.raises(ValueError, match=r"ref_rejected.*\(3,\)"):
        L.dpo_loss(cl, clab, rl, rlab, zero, torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match=r"same B, got 2 and 1"):
        L.dpo_loss(cl, clab, rl[:1], rlab[:1], zero, zero, 1.0)
    with pytest.raises(ValueError, match=r"beta.*-1"):
        L.dpo_loss(cl, clab, rl, rlab, zero, zero, -1.0)


# ---------------------------------------------------------------------------
# UNDIAL
# ---------------------------------------------------------------------------


def _ce(q: list[float], p: list[float]) -> float:
    return -sum(qi * math.log(pi) for qi, pi in zip(q, p))


def test_undial_hand_value():
    # teacher = the policy; beta = ln 2 halves the true token's probability before
    # renormalising: position (0,0) [0.5,.25,.25] label 0 -> q = [1/3,1/3,1/3];
    # (0,1) [.1,.8,.1] label 1 -> [1/6,2/3,1/6]; (1,0) [.2,.3,.5] label 1 -> [.2,.15,.5]/.85
    logits, labels = toy()
    ex0 = (_ce([1 / 3] * 3, rows(0, 0)) + _ce([1 / 6, 2 / 3, 1 / 6], rows(0, 1))) / 2
    ex1 = _ce([0.2 / 0.85, 0.15 / 0.85, 0.5 / 0.85], rows(1, 0))
    got = L.undial_loss(logits, logits.clone(), labels, math.log(2))
    assert close(got, (ex0 + ex1) / 2)


def test_undial_beta_zero_is_cross_entropy_to_the_teacher_and_ref_is_detached():
    logits, labels = toy()
    ref = logits.clone().requires_grad_(True)
    got = L.undial_loss(logits, ref, labels, 0.0)
    ent = lambda p: _ce(p, p)  # noqa: E731
    expected = ((ent(rows(0, 0)) + ent(rows(0, 1))) / 2 + ent(rows(1, 0))) / 2
    assert close(got, expected)
    assert not got.requires_grad  # only the (frozen here) policy logits carry a gradient


def test_undial_gradient_is_softmax_minus_adjusted_teacher():
    logits, labels = toy(requires_grad=True)
    L.undial_loss(logits, logits.detach().clone(), labels, math.log(2)).backward()
    # d CE / d z = (softmax(z) - q) / (n_i * B) at a scored position
    expected = [(0.5 - 1 / 3) / 4, (0.25 - 1 / 3) / 4, (0.25 - 1 / 3) / 4]
    assert torch.allclose(logits.grad[0, 0], torch.tensor(expected), atol=1e-6)
    assert torch.count_nonzero(logits.grad[1, 1:]) == 0  # unscored positions


def test_undial_validation():
    logits, labels = toy()
    with pytest.raises(ValueError, match=r"beta.*-1"):
        L.undial_loss(logits, logits, labels, -1.0)
    with pytest.raises(ValueError, match=r"ref_logits.*\(2, 3, 4\)"):
        L.undial_loss(logits, torch.zeros(2, 3, 4), labels, 1.0)


# ---------------------------------------------------------------------------
# WGA and SatImp
# ---------------------------------------------------------------------------


def test_wga_hand_value():
    logits, labels = toy()
    beta = 2.0
    ex0 = (P00**beta * math.log(P00) + P01**beta * math.log(P01)) / 2
    ex1 = P10**beta * math.log(P10)
    assert close(L.wga_loss(logits, labels, beta), (ex0 + ex1) / 2)
    assert close(L.wga_loss(logits, labels, 0.0), L.ga_loss(logits, labels))


def test_wga_gradient_is_weighted_ga_gradient():
    # the weight is a stop-gradient: grad WGA = p^beta * grad GA for a one-token example
    logits, labels = toy(requires_grad=True)
    one = labels.clone()
    one[0] = IGN  # only example 1's single token is scored
    L.wga_loss(logits, one, 1.5).backward()
    g_wga = logits.grad.clone()
    logits.grad = None
    L.ga_loss(logits, one).backward()
    assert torch.allclose(g_wga, P10**1.5 * logits.grad, atol=1e-7)


def test_satimp_hand_value():
    logits, labels = toy()
    b1, b2 = 2.0, 1.0

    def w(p):
        return p**b1 * (1 - p) ** b2

    ex0 = (w(P00) * math.log(P00) + w(P01) * math.log(P01)) / 2
    ex1 = w(P10) * math.log(P10)
    assert close(L.satimp_loss(logits, labels, b1, b2), (ex0 + ex1) / 2)
    assert close(L.satimp_loss(logits, labels, 1.3, 0.0), L.wga_loss(logits, labels, 1.3))


def test_weighted_ascent_validation():
    logits, labels = toy()
    with pytest.raises(ValueError, match=r"beta.*-0.5"):
        L.wga_loss(logits, labels, -0.5)
    with pytest.raises(ValueError, match=r"beta2.*inf"):
        L.satimp_loss(logits, labels, 1.0, float("inf"))


# ---------------------------------------------------------------------------
# CE-U
# ---------------------------------------------------------------------------


def test_drop_first_answer_tokens():
    labels = torch.tensor([[IGN, 4, 5, 6], [IGN, IGN, 7, IGN]])
    assert L.drop_first_answer_tokens(labels, 1).tolist() == [
        [IGN, IGN, 5, 6],
        [IGN, IGN, IGN, IGN],
    ]
    assert torch.equal(L.drop_first_answer_tokens(labels, 0), labels)
    with pytest.raises(ValueError, match=r"n must be an int >= 0, got -1"):
        L.drop_first_answer_tokens(labels, -1)


def test_ceu_hand_value():
    # the true token removed: (0,0) [.5,.25,.25] label 0 -> q = [0,.5,.5], CE = ln 4;
    # (0,1) [.1,.8,.1] label 1 -> [.5,0,.5], CE = ln 10; (1,0) [.2,.3,.5] label 1 -> [2/7,0,5/7]
    logits, labels = toy()
    ex0 = (math.log(4) + math.log(10)) / 2
    ex1 = _ce([2 / 7, 5 / 7], [0.2, 0.5])
    assert close(L.ceu_loss(logits, labels, ignore_first_n=0), (ex0 + ex1) / 2)
    # dropping the first answer token: example 0's is labels[0,0] (never scored anyway),
    # example 1's is its only scored token, so example 1 then counts as 0
    assert close(L.ceu_loss(logits, labels, ignore_first_n=1), ex0 / 2)


def test_ceu_gradient_lowers_the_true_token():
    logits, labels = toy(requires_grad=True)
    L.ceu_loss(logits, labels, ignore_first_n=0).backward()
    # d CE / d z = softmax(z) - q: at (0,0) [0.5 - 0, 0.25 - 0.5, 0.25 - 0.5] / (2 * 2)
    assert torch.allclose(logits.grad[0, 0], torch.tensor([0.125, -0.0625, -0.0625]), atol=1e-6)


def test_ceu_validation():
    logits, labels = toy()
    with pytest.raises(ValueError, match=r">= 2 tokens.*\(2, 3, 1\)"):
        L.ceu_loss(logits[..., :1], labels.clamp(max=0))


# ---------------------------------------------------------------------------
# the same values as open-unlearning's formulas (module docstring)
# ---------------------------------------------------------------------------


def _ou_batch_nll(logits, labels):
    shifted_labels = labels[..., 1:].contiguous()
    shifted_logits = logits[..., :-1, :].contiguous()
    loss = torch.nn.CrossEntropyLoss(ignore_index=-100, reduction="none")
    return loss(shifted_logits.transpose(-1, -2), shifted_labels).sum(dim=-1)


def _ou_dpo(win_logits, win_ref, win_labels, lose_logits, lose_ref, lose_labels, beta):
    win_log_ratio = -(_ou_batch_nll(win_logits, win_labels) - _ou_batch_nll(win_ref, win_labels))
    lose_log_ratio = -(
        _ou_batch_nll(lose_logits, lose_labels) - _ou_batch_nll(lose_ref, lose_labels)
    )
    return -2 / beta * F.logsigmoid(beta * (win_log_ratio - lose_log_ratio)).mean()


def _ou_undial(logits, teacher_logits, labels, beta):
    shift_labels = labels[..., 1:]
    shift_logits = logits[..., :-1, :]
    shift_teacher = teacher_logits[..., :-1, :]
    mask = torch.zeros_like(shift_teacher)
    b = torch.arange(mask.shape[0]).view(-1, 1, 1)
    s = torch.arange(mask.shape[1]).view(1, -1, 1)
    mask[b, s, shift_labels.unsqueeze(-1)] = 1.0
    soft = F.softmax(shift_teacher - mask * beta, dim=-1)
    v = shift_logits.size(-1)
    return torch.nn.CrossEntropyLoss(reduction="none")(
        shift_logits.reshape(-1, v), soft.reshape(-1, v)
    ).mean()


def _ou_token_ce(logits, labels):
    shift_logits = logits[..., :-1, :]
    shift_labels = labels[..., 1:]
    ce = torch.nn.CrossEntropyLoss(ignore_index=-100, reduction="none")(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1)
    )
    return ce, shift_labels.reshape(-1) != -100


def _ou_wga(logits, labels, beta):
    ce, valid = _ou_token_ce(logits, labels)
    w = ((-ce).exp().detach()) ** beta
    return -(w * ce)[valid].mean()


def _ou_satimp(logits, labels, beta1, beta2):
    ce, valid = _ou_token_ce(logits, labels)
    p = (-ce).exp().detach()
    return -((p**beta1) * ((1 - p) ** beta2) * ce)[valid].mean()


def _ou_ceu(logits, labels, n):
    valid_mask = labels != -100
    update = (valid_mask.cumsum(dim=-1) <= n) & valid_mask
    shifted_labels = labels.masked_fill(update, -100)[..., 1:]
    shifted_logits = logits[..., :-1, :]
    keep = shifted_labels != -100
    vl, vy = shifted_logits[keep], shifted_labels[keep]
    target = vl.detach().clone()
    target.scatter_(dim=-1, index=vy.unsqueeze(-1), value=float("-inf"))
    return F.cross_entropy(vl, F.softmax(target, dim=-1))


@pytest.fixture()
def random_toy():
    """B=3, T=5, V=7 random logits; labels: prompt position 0 ignored, the rest scored."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=gen) * 2
    ref = torch.randn(3, 5, 7, generator=gen) * 2
    labels = torch.randint(0, 7, (3, 5), generator=gen)
    labels[:, 0] = IGN
    alt_labels = torch.randint(0, 7, (3, 5), generator=gen)
    alt_labels[:, 0] = IGN
    return logits, ref, labels, alt_labels


def test_matches_open_unlearning_formulas(random_toy):
    logits, ref, labels, alt = random_toy
    ref_w, _ = L.sequence_logprobs(ref, alt)
    ref_l, _ = L.sequence_logprobs(ref, labels)
    pairs = [
        (
            L.dpo_loss(logits, alt, logits, labels, ref_w, ref_l, 0.1),
            _ou_dpo(logits, ref, alt, logits, ref, labels, 0.1),
        ),
        (L.undial_loss(logits, ref, labels, 10.0), _ou_undial(logits, ref, labels, 10.0)),
        (L.wga_loss(logits, labels, 1.0), _ou_wga(logits, labels, 1.0)),
        (L.satimp_loss(logits, labels, 5.0, 1.0), _ou_satimp(logits, labels, 5.0, 1.0)),
        (L.ceu_loss(logits, labels, 1), _ou_ceu(logits, labels, 1)),
        (L.ceu_loss(logits, labels, 2), _ou_ceu(logits, labels, 2)),
    ]
    for i, (ours, theirs) in enumerate(pairs):
        assert float(ours) == pytest.approx(float(theirs), rel=1e-5, abs=1e-6), i


@pytest.mark.parametrize(
    "fn",
    [
        lambda lg, lb: L.undial_loss(lg, lg.detach() + 0.3, lb, 2.0),
        lambda lg, lb: L.wga_loss(lg, lb, 1.0),
        lambda lg, lb: L.satimp_loss(lg, lb, 5.0, 1.0),
        lambda lg, lb: L.ceu_loss(lg, lb, 0),
        lambda lg, lb: L.dpo_loss(
            lg, lb, lg, lb.flip(1), -torch.ones(len(lb)), -2 * torch.ones(len(lb)), 1.0
        ),
    ],
)
def test_batch_split_invariance(fn):
    # per-example means: the mean of two single-example losses is the batch loss
    logits, labels = toy()
    labels = torch.tensor([[IGN, 1, 0], [IGN, 2, 1]])
    whole = fn(logits, labels)
    halves = (fn(logits[:1], labels[:1]) + fn(logits[1:], labels[1:])) / 2
    assert close(whole, float(halves), tol=1e-6)
    assert torch.isfinite(whole)


def test_bf16_logits_accepted():
    logits, labels = toy()
    lg = logits.bfloat16()
    for value in (
        L.undial_loss(lg, lg, labels, 1.0),
        L.wga_loss(lg, labels, 1.0),
        L.satimp_loss(lg, labels, 5.0, 1.0),
        L.ceu_loss(lg, labels, 0),
    ):
        assert value.dtype == torch.float32 and torch.isfinite(value)
