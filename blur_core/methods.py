"""Method registry: a method name and its hyperparameters -> an ``Objective``.

An ``Objective`` fixes what the shared training loop does in one step:
  * which forget loss (ga | npo | simnpo | idk | dpo | undial | wga | satimp | ceu | rmu) and
    which retain loss (nll | kl | rmu),
  * how the two accumulated gradients F and R are combined:
      combiner "blur":     d = blur_direction(F, R, gamma, variant)       (bilevel.py)
      combiner "weighted": d = forget_weight * F + retain_weight * R       (GradDiff & co.)
      combiner "pdu":      d = forget_weight * F + lambda * R, then the dual ascent
                           lambda <- max(0, lambda + dual_step_size (L_r - retain_loss_eps))
So BLUR and every baseline differ only in the combiner and the losses.

Registered methods (hyperparameters are validated dataclasses; unknown keys and bad
values raise ``ConfigError`` naming them):
  blur      any forget loss x any retain loss x variant x gamma
  ga        gradient ascent on the forget set (no retain term)
  graddiff  GA + retain_weight * (NLL or KL) on the retain set
  npo       NPO (+ retain term, retain_weight=0 for plain NPO)
  simnpo    SimNPO (+ retain term)
  idk       NLL on "I don't know" answers for the forget questions (+ retain term)
  dpo       DPO: the preferred answer (a refusal: IdkDPO, or an alternate answer: AltPO) over
            the forget answer, against the starting model's log-probs (+ retain term)
  undial    UNDIAL: self-distillation to the starting model's logits with the true token
            lowered by beta (+ retain term, off by default as in open-unlearning)
  wga       WGA: gradient ascent, each token weighted by p^beta (+ retain term)
  satimp    SatImp: gradient ascent weighted by p^beta1 (1-p)^beta2 (+ retain term)
  ceu       CE-U: cross entropy to the model's own distribution without the true token
            (+ retain term, off by default as in open-unlearning)
  rmu       RMU activation steering at one layer, retain activations held to the frozen model
  pdu       primal-dual unlearning: min L_forget s.t. L_retain <= retain_loss_eps (a multiplier)
  sft       plain NLL on the retain set only: fine-tuning, used to build target/retain models
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blur_core.bilevel import DEFAULT_EPS, VARIANTS
from blur_core.config import (
    ConfigError,
    checked,
    finite_non_negative,
    non_negative,
    one_of,
    parse,
    positive,
    to_dict,
)

FORGET_LOSSES = ("ga", "npo", "simnpo", "idk", "dpo", "undial", "wga", "satimp", "ceu", "rmu")
PREFERRED_ANSWERS = ("idk", "alternate")  # DPO's chosen answer: a refusal or an alternate answer
RETAIN_LOSSES = ("nll", "kl", "rmu")
PDU_FORGET_LOSSES = ("ga", "npo", "simnpo", "idk")  # PDU: those with no extra knobs

__all__ = [
    "FORGET_LOSSES",
    "METHODS",
    "PREFERRED_ANSWERS",
    "RETAIN_LOSSES",
    "Objective",
    "build_objective",
    "hparams_class",
    "method_names",
]


@dataclass(frozen=True)
class Objective:
    """What one training step optimises (resolved from a method and its hyperparameters)."""

    method: str
    forget_loss: str | None
    retain_loss: str | None
    combiner: str  # "blur" | "weighted" | "pdu"
    gamma: float = 0.0
    variant: str = "forget_priority"
    eps: float = DEFAULT_EPS
    forget_weight: float = 1.0
    retain_weight: float = 1.0
    beta: float = 0.1  # NPO / SimNPO / DPO inverse temperature
    delta: float = 0.0  # SimNPO margin
    preferred: str = "idk"  # DPO's chosen answer: idk (refusal) | alternate
    undial_beta: float = 10.0  # UNDIAL: penalty on the true token's teacher logit
    wga_beta: float = 1.0  # WGA: token weight p^beta
    satimp_beta1: float = 5.0  # SatImp: saturation weight p^beta1
    satimp_beta2: float = 1.0  # SatImp: importance weight (1-p)^beta2
    ceu_ignore_first: int = 1  # CE-U: answer tokens at the start that are not unlearned
    rmu_layer: int = 7
    steering_coeff: float = 6.5
    rmu_seed: int = 0
    retain_loss_eps: float = 0.0  # PDU: the constraint L_retain <= retain_loss_eps
    dual_step_size: float = 1.0  # PDU: eta of the dual ascent
    dual_init: float = 1.0  # PDU: lambda at step 0
    dual_warmup_steps: int = 0  # PDU: lambda held at dual_init for the first N steps

    @property
    def uses_forget(self) -> bool:
        return self.forget_loss is not None and (self.combiner == "blur" or self.forget_weight != 0)

    @property
    def uses_retain(self) -> bool:
        return self.retain_loss is not None and (
            self.combiner in ("blur", "pdu") or self.retain_weight != 0
        )

    @property
    def needs_reference_model(self) -> bool:
        """A frozen copy of the starting model is needed during training (KL, RMU retain,
        UNDIAL's teacher logits)."""
        return (self.uses_retain and self.retain_loss in ("kl", "rmu")) or (
            self.uses_forget and self.forget_loss == "undial"
        )

    @property
    def needs_reference_logprobs(self) -> bool:
        """NPO's / DPO's fixed reference sequence log-probs of the forget set (precomputed
        once; DPO's: of the forget answer and of the preferred answer)."""
        return self.uses_forget and self.forget_loss in ("npo", "dpo")

    @property
    def forget_answers(self) -> str | None:
        """'idk' when the forget set's answers are replaced by refusals."""
        return "idk" if self.forget_loss == "idk" else None

    @property
    def preferred_answers(self) -> str | None:
        """DPO: which second answer each forget example carries ('idk' | 'alternate')."""
        return self.preferred if self.uses_forget and self.forget_loss == "dpo" else None

    @property
    def needs_qa_forget(self) -> bool:
        """The forget loss needs question/answer records (its answers are replaced or paired)."""
        return self.uses_forget and self.forget_loss in ("idk", "dpo")

    @property
    def rmu_layers_used(self) -> bool:
        return (self.uses_forget and self.forget_loss == "rmu") or (
            self.uses_retain and self.retain_loss == "rmu"
        )


# --------------------------------------------------------------------- hyperparameters


@dataclass
class BlurHParams:
    """BLUR: d = R + (gamma - <R,F>/||F||^2) F (forget_priority) or the retain-priority mirror."""

    gamma: float = checked(
        0.1, check=finite_non_negative, doc="forget-descent margin <d,F> = gamma ||F||^2"
    )
    variant: str = checked(
        "forget_priority", check=one_of(*VARIANTS), doc="which loss has priority"
    )
    forget_loss: str = checked("npo", check=one_of(*FORGET_LOSSES), doc="lower-level forget loss")
    retain_loss: str = checked("nll", check=one_of(*RETAIN_LOSSES), doc="upper-level retain loss")
    eps: float = checked(
        DEFAULT_EPS, check=non_negative, doc="guard on the squared priority-gradient norm"
    )
    beta: float = checked(0.1, check=positive, doc="NPO/SimNPO/DPO inverse temperature")
    delta: float = checked(0.0, doc="SimNPO margin")
    preferred: str = checked(
        "idk", check=one_of(*PREFERRED_ANSWERS), doc="DPO: the chosen answer (refusal/alternate)"
    )
    undial_beta: float = checked(
        10.0, check=finite_non_negative, doc="UNDIAL: penalty on the true token's teacher logit"
    )
    wga_beta: float = checked(1.0, check=finite_non_negative, doc="WGA: token weight p^beta")
    satimp_beta1: float = checked(5.0, check=finite_non_negative, doc="SatImp: weight p^beta1")
    satimp_beta2: float = checked(1.0, check=finite_non_negative, doc="SatImp: weight (1-p)^beta2")
    ceu_ignore_first: int = checked(
        1, check=non_negative, doc="CE-U: first answer tokens not unlearned"
    )
    rmu_layer: int = checked(
        7, check=non_negative, doc="RMU: index into hidden_states (0 = embeddings)"
    )
    steering_coeff: float = checked(6.5, check=positive, doc="RMU control-vector norm")
    rmu_seed: int = checked(0, doc="RMU control-vector seed")

    def objective(self, name: str) -> Objective:
        return Objective(
            method=name,
            forget_loss=self.forget_loss,
            retain_loss=self.retain_loss,
            combiner="blur",
            gamma=self.gamma,
            variant=self.variant,
            eps=self.eps,
            beta=self.beta,
            delta=self.delta,
            preferred=self.preferred,
            undial_beta=self.undial_beta,
            wga_beta=self.wga_beta,
            satimp_beta1=self.satimp_beta1,
            satimp_beta2=self.satimp_beta2,
            ceu_ignore_first=self.ceu_ignore_first,
            rmu_layer=self.rmu_layer,
            steering_coeff=self.steering_coeff,
            rmu_seed=self.rmu_seed,
        )


@dataclass
class GAHParams:
    """Gradient ascent: d = forget_weight * grad(-NLL_forget)."""

    forget_weight: float = checked(1.0, check=positive)

    def objective(self, name: str) -> Objective:
        return Objective(
            method=name,
            forget_loss="ga",
            retain_loss=None,
            combiner="weighted",
            forget_weight=self.forget_weight,
            retain_weight=0.0,
        )


@dataclass
class _WeightedHParams:
    forget_weight: float = checked(1.0, check=positive, doc="weight of the forget gradient")
    retain_weight: float = checked(
        1.0, check=non_negative, doc="weight of the retain gradient (0: none)"
    )
    retain_loss: str = checked("nll", check=one_of("nll", "kl"), doc="retain loss")

    _forget_loss = ""
    # hyperparameter name -> Objective field, for the loss-specific ones
    _objective_fields = ()  # (hyperparameter, Objective field) pairs; a class attribute

    def objective(self, name: str) -> Objective:
        extra = {field: getattr(self, hp) for hp, field in self._objective_fields}
        return Objective(
            method=name,
            forget_loss=self._forget_loss,
            retain_loss=self.retain_loss,
            combiner="weighted",
            forget_weight=self.forget_weight,
            retain_weight=self.retain_weight,
            **extra,
        )


@dataclass
class GradDiffHParams(_WeightedHParams):
    """GradDiff: d = forget_weight * grad(-NLL_f) + retain_weight * grad(L_retain)."""

    _forget_loss = "ga"


@dataclass
class NPOHParams(_WeightedHParams):
    """NPO (+GD/KL): d = forget_weight * grad(L_NPO) + retain_weight * grad(L_retain)."""

    beta: float = checked(0.1, check=positive, doc="NPO inverse temperature")
    _forget_loss = "npo"
    _objective_fields = (("beta", "beta"),)


@dataclass
class SimNPOHParams(_WeightedHParams):
    """SimNPO (+GD/KL): length-normalised NPO without a reference model."""

    beta: float = checked(2.5, check=positive, doc="SimNPO inverse temperature")
    delta: float = checked(0.0, doc="SimNPO margin")
    _forget_loss = "simnpo"
    _objective_fields = (("beta", "beta"), ("delta", "delta"))


@dataclass
class IdkHParams(_WeightedHParams):
    """IdK: NLL on refusal answers to the forget questions (+ retain term)."""

    _forget_loss = "idk"


@dataclass
class DPOHParams(_WeightedHParams):
    """DPO (Rafailov et al. 2023) on (forget question, preferred answer, forget answer):
    IdkDPO with refusals (TOFU), AltPO with alternate answers (Mekala et al. 2024); defaults
    of open-unlearning's configs/trainer/DPO.yaml (beta 0.1, alpha = gamma = 1, NLL)."""

    beta: float = checked(0.1, check=positive, doc="DPO inverse temperature")
    preferred: str = checked(
        "idk",
        check=one_of(*PREFERRED_ANSWERS),
        doc="the chosen answer: idk (a refusal, data.idk_file) or alternate (data.alternate_file)",
    )
    _forget_loss = "dpo"
    _objective_fields = (("beta", "beta"), ("preferred", "preferred"))


@dataclass
class UNDIALHParams(_WeightedHParams):
    """UNDIAL (Dong et al. 2024): self-distillation to the starting model's logits with the
    true token's lowered by beta; open-unlearning's defaults (beta 10, no retain term)."""

    beta: float = checked(
        10.0, check=finite_non_negative, doc="penalty on the true token's teacher logit"
    )
    retain_weight: float = checked(
        0.0, check=non_negative, doc="weight of the retain gradient (0: none)"
    )
    _forget_loss = "undial"
    _objective_fields = (("beta", "undial_beta"),)


@dataclass
class WGAHParams(_WeightedHParams):
    """WGA (Wang et al. 2025): gradient ascent with token weights p^beta; open-unlearning's
    defaults (beta 1, alpha = gamma = 1, NLL)."""

    beta: float = checked(1.0, check=finite_non_negative, doc="token weight p^beta")
    _forget_loss = "wga"
    _objective_fields = (("beta", "wga_beta"),)


@dataclass
class SatImpHParams(_WeightedHParams):
    """SatImp (Yang et al. 2025): gradient ascent with token weights p^beta1 (1-p)^beta2;
    open-unlearning's configs/trainer/SatImp.yaml (beta1 5, beta2 1, gamma 0.1, alpha 1)."""

    forget_weight: float = checked(0.1, check=positive, doc="weight of the forget gradient")
    beta1: float = checked(5.0, check=finite_non_negative, doc="saturation weight p^beta1")
    beta2: float = checked(1.0, check=finite_non_negative, doc="importance weight (1-p)^beta2")
    _forget_loss = "satimp"
    _objective_fields = (("beta1", "satimp_beta1"), ("beta2", "satimp_beta2"))


@dataclass
class CEUHParams(_WeightedHParams):
    """CE-U (Yang et al. 2025): cross entropy to the model's own distribution with the true
    token removed; open-unlearning's defaults (first answer token skipped, no retain term)."""

    retain_weight: float = checked(
        0.0, check=non_negative, doc="weight of the retain gradient (0: none)"
    )
    ignore_first_n_answer_tokens: int = checked(
        1, check=non_negative, doc="answer tokens at the start of each example not unlearned"
    )
    _forget_loss = "ceu"
    _objective_fields = (("ignore_first_n_answer_tokens", "ceu_ignore_first"),)


@dataclass
class RMUHParams:
    """RMU: forget activations at ``rmu_layer`` pushed to a random vector of norm steering_coeff;
    retain activations held to the frozen model's, weighted by ``retain_weight`` (alpha)."""

    rmu_layer: int = checked(7, check=non_negative, doc="index into hidden_states (0 = embeddings)")
    steering_coeff: float = checked(6.5, check=positive)
    retain_weight: float = checked(1200.0, check=non_negative, doc="alpha in the RMU paper")
    forget_weight: float = checked(1.0, check=positive)
    rmu_seed: int = checked(0)

    def objective(self, name: str) -> Objective:
        return Objective(
            method=name,
            forget_loss="rmu",
            retain_loss="rmu",
            combiner="weighted",
            forget_weight=self.forget_weight,
            retain_weight=self.retain_weight,
            rmu_layer=self.rmu_layer,
            steering_coeff=self.steering_coeff,
            rmu_seed=self.rmu_seed,
        )


def _finite_positive(v) -> str | None:
    return None if v is None or (0 < v < float("inf")) else "must be a finite number > 0"


@dataclass
class PDUHParams:
    """PDU: min L_f s.t. L_r <= retain_loss_eps; d = forget_weight F + lambda R, dual ascent."""

    retain_loss_eps: float = checked(
        0.0,
        check=finite_non_negative,
        doc="the constraint L_retain <= eps: set it a little above the starting model's "
        "retain loss (0: the dual rises while the retain loss is above 0)",
    )
    dual_step_size: float = checked(
        1.0, check=_finite_positive, doc="eta: lambda <- max(0, lambda + eta (L_r - eps))"
    )
    dual_init: float = checked(1.0, check=finite_non_negative, doc="lambda at step 0")
    dual_warmup_steps: int = checked(
        0, check=non_negative, doc="steps with lambda held at dual_init before the ascent"
    )
    forget_weight: float = checked(1.0, check=_finite_positive, doc="weight of the forget loss")
    # the losses whose hyperparameters PDU carries (beta, delta); the rivals' losses with
    # their own knobs (dpo, undial, wga, satimp, ceu) are not offered here yet
    forget_loss: str = checked("npo", check=one_of(*PDU_FORGET_LOSSES), doc="forget objective")
    retain_loss: str = checked("nll", check=one_of("nll", "kl"), doc="the constrained loss")
    beta: float = checked(0.1, check=positive, doc="NPO/SimNPO inverse temperature")
    delta: float = checked(0.0, doc="SimNPO margin")

    def objective(self, name: str) -> Objective:
        return Objective(
            method=name,
            forget_loss=self.forget_loss,
            retain_loss=self.retain_loss,
            combiner="pdu",
            forget_weight=self.forget_weight,
            beta=self.beta,
            delta=self.delta,
            retain_loss_eps=self.retain_loss_eps,
            dual_step_size=self.dual_step_size,
            dual_init=self.dual_init,
            dual_warmup_steps=self.dual_warmup_steps,
        )


@dataclass
class SFTHParams:
    """Supervised fine-tuning on the retain set (used to train target and retain-only models)."""

    def objective(self, name: str) -> Objective:
        return Objective(
            method=name,
            forget_loss=None,
            retain_loss="nll",
            combiner="weighted",
            forget_weight=0.0,
            retain_weight=1.0,
        )


METHODS: dict[str, type] = {
    "blur": BlurHParams,
    "ga": GAHParams,
    "graddiff": GradDiffHParams,
    "npo": NPOHParams,
    "simnpo": SimNPOHParams,
    "idk": IdkHParams,
    "dpo": DPOHParams,
    "undial": UNDIALHParams,
    "wga": WGAHParams,
    "satimp": SatImpHParams,
    "ceu": CEUHParams,
    "rmu": RMUHParams,
    "pdu": PDUHParams,
    "sft": SFTHParams,
}


def method_names() -> list[str]:
    return sorted(METHODS)


def hparams_class(name: str) -> type:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; registered methods: {method_names()}")
    return METHODS[name]


def build_objective(
    name: str, hparams: dict[str, Any] | None = None, where: str = "method"
) -> Objective:
    """Validate ``hparams`` for method ``name`` and resolve its Objective."""
    cls = hparams_class(name)
    return parse(cls, hparams or {}, where).objective(name)


def resolved_hparams(name: str, hparams: dict[str, Any] | None = None) -> dict[str, Any]:
    """The method's hyperparameters with defaults filled in (for the resolved run config)."""
    return to_dict(parse(hparams_class(name), hparams or {}, "method"))
