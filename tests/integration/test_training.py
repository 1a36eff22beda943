"""The shared loop on the tiny model: every method trains, BLUR-NPO forgets, clipping,
exact resume, and failures that stop the run loudly."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from blur_core.config import ConfigError
from blur_core.data import load_records
from blur_core.methods import METHODS
from blur_core.models import load_model, load_tokenizer
from blur_core.scoring import score_qa
from blur_core.train import backend as backend_mod
from blur_core.train import step as step_mod
from blur_core.train.config import parse_run_config
from blur_core.train.loop import NonFiniteError, run
from tests.integration.helpers import load_weights, max_abs_diff, read_log, run_config

# hyperparameters that fit the 2-layer tiny model (hidden_states 0..2)
METHOD_HPARAMS = {
    "rmu": {"rmu_layer": 1, "steering_coeff": 2.0, "retain_weight": 10.0},
    "blur": {"forget_loss": "npo", "retain_loss": "kl", "gamma": 0.1},
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_runs_and_changes_parameters(name, target_model, embedded, tmp_path):
    method = {"name": name, **METHOD_HPARAMS.get(name, {})}
    cfg = parse_run_config(
        run_config(
            target_model,
            tmp_path / name,
            method,
            embedded,
            max_steps=3,
            optimizer="adamw",
            lr=1e-3,
            max_grad_norm=1.0,
        )
    )
    result = run(cfg)
    log = read_log(tmp_path / name)
    assert [r["step"] for r in log] == [1, 2, 3]
    assert all(math.isfinite(r["update_norm"]) and r["update_norm"] > 0 for r in log)
    diff = max_abs_diff(load_weights(target_model), load_weights(result.model_dir))
    assert diff > 1e-5, f"{name}: parameters did not change (max abs diff {diff})"
    assert (result.model_dir / "run_config.yaml").exists()
    assert (result.model_dir / "tokenizer.json").exists()


@pytest.mark.parametrize(
    "blur_forget_loss", ["ga", "simnpo", "idk", "rmu", "dpo", "undial", "wga", "satimp", "ceu"]
)
def test_blur_with_each_forget_loss(blur_forget_loss, target_model, embedded, tmp_path):
    method = {
        "name": "blur",
        "forget_loss": blur_forget_loss,
        "retain_loss": "nll",
        "gamma": 0.1,
        "rmu_layer": 1,
    }
    run(
        parse_run_config(run_config(target_model, tmp_path, method, embedded, max_steps=2, lr=1e-2))
    )
    log = read_log(tmp_path)
    assert [r["step"] for r in log] == [1, 2]
    for r in log:
        # forget priority with every forget loss: xi = gamma - <R,F>/||F||^2, so the update
        # d = R + xi F has <d, F> = gamma ||F||^2 (the forget loss descends at every step)
        assert not r["fallback"] and r["norm_f"] > 0 and r["norm_r"] > 0
        assert r["xi"] == pytest.approx(0.1 - r["dot"] / r["norm_f"] ** 2, rel=1e-6, abs=1e-9)
        inner = r["dot"] + r["xi"] * r["norm_f"] ** 2
        assert inner == pytest.approx(0.1 * r["norm_f"] ** 2, rel=1e-6)
        # ||d||^2 = ||R||^2 + 2 xi <R,F> + xi^2 ||F||^2
        norm_d2 = r["norm_r"] ** 2 + 2 * r["xi"] * r["dot"] + r["xi"] ** 2 * r["norm_f"] ** 2
        assert r["update_norm_raw"] ** 2 == pytest.approx(norm_d2, rel=1e-4)


def _forget_nll(model_dir, embedded) -> float:
    model, tok = load_model(str(model_dir)), load_tokenizer(str(model_dir))
    return score_qa(model, tok, load_records(embedded["forget"]), max_length=64)["nll"]


def test_blur_npo_forgets_a_memorised_set(target_model, embedded, tmp_path):
    method = {"name": "blur", "forget_loss": "npo", "retain_loss": "nll", "gamma": 0.1}
    result = run(
        parse_run_config(
            run_config(
                target_model,
                tmp_path,
                method,
                embedded,
                max_steps=20,
                optimizer="adamw",
                lr=1e-3,
                max_grad_norm=1.0,
            )
        )
    )
    log = read_log(tmp_path)
    assert log[-1]["loss_forget"] < 0.5 * log[0]["loss_forget"], (
        log[0]["loss_forget"],
        log[-1]["loss_forget"],
    )
    before, after = _forget_nll(target_model, embedded), _forget_nll(result.model_dir, embedded)
    assert before < 0.5, f"target model did not memorise the forget set (NLL {before})"
    assert after > before + 2.0, f"forget NLL {before:.3f} -> {after:.3f}"
    # forget priority: <d, F> = gamma ||F||^2 > 0 means every step descends the forget loss
    for r in log:
        inner = r["dot"] + r["xi"] * r["norm_f"] ** 2
        assert inner == pytest.approx(0.1 * r["norm_f"] ** 2, rel=1e-6)


def test_clipping_scales_update_to_max_norm(target_model, embedded, tmp_path):
    method = {"name": "blur", "forget_loss": "ga", "retain_loss": "nll", "gamma": 1.0}
    max_norm = 0.02
    result = run(
        parse_run_config(
            run_config(target_model, tmp_path, method, embedded, max_grad_norm=max_norm)
        )
    )
    rec = read_log(tmp_path)[0]
    assert rec["update_norm_raw"] > 2 * max_norm, "clipping was not exercised"
    assert rec["update_norm"] == pytest.approx(max_norm, rel=1e-9)
    start, end = load_weights(target_model), load_weights(result.model_dir)
    applied = math.sqrt(
        sum(float(((end[k].double() - start[k].double()) ** 2).sum()) for k in start)
    )
    assert applied == pytest.approx(max_norm, rel=1e-4)  # SGD lr=1: the weight change is the update


def _preempted_at(n: int):
    """A LocalBackend.step that raises KeyboardInterrupt on its n-th call (a preemption)."""
    real_step, calls = backend_mod.LocalBackend.step, {"n": 0}

    def step(self, lr):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt("simulated preemption")
        real_step(self, lr)

    return step


def write_alternates(embedded, path):
    """The forget records with an alternate answer (a perturbed one: words the tiny
    tokenizer knows) in the default field ``alternate``: AltPO's file layout."""
    records = [
        {"question": r["question"], "alternate": r["perturbed_answer"][0]}
        for r in load_records(embedded["forget"])
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize(
    "forget_loss, extra",
    [("npo", {}), ("dpo", {"preferred": "alternate", "beta": 0.5})],
    ids=["npo", "dpo-alternate"],
)
def test_resume_from_checkpoint_is_bit_identical(
    forget_loss, extra, target_model, embedded, tmp_path, monkeypatch
):
    # NPO's [n] and DPO's [n, 2] reference log-probs come back from the checkpoint (had the
    # resumed run recomputed them from the half-trained model, the weights would differ)
    method = {"name": "blur", "forget_loss": forget_loss, "retain_loss": "nll", "gamma": 0.2}
    method.update(extra)
    train = dict(
        max_steps=6,
        optimizer="adamw",
        lr=1e-3,
        max_grad_norm=1.0,
        save_every=2,
        schedule="cosine",
        warmup_steps=1,
        micro_batch_size=4,
        grad_accum=2,
    )
    alt = write_alternates(embedded, tmp_path / "alternates.jsonl")

    def config(out):
        cfg = run_config(target_model, out, method, embedded, **train)
        cfg["data"]["alternate_file"] = str(alt)
        return parse_run_config(cfg)

    full = run(config(tmp_path / "full"))

    cfg = config(tmp_path / "cut")
    real_step = backend_mod.LocalBackend.step
    monkeypatch.setattr(backend_mod.LocalBackend, "step", _preempted_at(5))
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    assert not (tmp_path / "cut" / "model").exists()
    monkeypatch.setattr(backend_mod.LocalBackend, "step", real_step)
    resumed = run(cfg)

    a, b = load_weights(full.model_dir), load_weights(resumed.model_dir)
    assert all(torch.equal(a[k], b[k]) for k in a), f"max abs diff {max_abs_diff(a, b)}"
    log = read_log(tmp_path / "cut")
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert [r["xi"] for r in log] == [r["xi"] for r in read_log(tmp_path / "full")]
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["resumed_from"] == 4


PDU_METHOD = {
    "name": "pdu",
    "forget_loss": "npo",
    "retain_loss": "nll",
    "retain_loss_eps": 0.0,  # below the retain NLL: the constraint is violated, the dual rises
    "dual_step_size": 20.0,
    "dual_init": 0.5,
    "dual_warmup_steps": 1,
}


def _check_pdu_log(log: list[dict], method: dict) -> None:
    """The logged dual follows the projected ascent on the logged retain loss, and the update
    is d = w_f F + dual R: ||d||^2 = w_f^2 ||F||^2 + 2 w_f dual <R,F> + dual^2 ||R||^2."""
    eta, eps, warmup = (
        method["dual_step_size"],
        method["retain_loss_eps"],
        method["dual_warmup_steps"],
    )
    assert log[0]["dual"] == method["dual_init"]
    for prev, rec in itertools.pairwise(log):
        expected = prev["dual"]
        if prev["step"] > warmup:
            expected = max(0.0, prev["dual"] + eta * (prev["loss_retain"] - eps))
        assert rec["dual"] == pytest.approx(expected, rel=1e-12, abs=1e-15), rec["step"]
    wf = method.get("forget_weight", 1.0)
    for r in log:
        assert r["xi"] is None
        d2 = (
            (wf * r["norm_f"]) ** 2 + 2 * wf * r["dual"] * r["dot"] + (r["dual"] * r["norm_r"]) ** 2
        )
        assert r["update_norm_raw"] ** 2 == pytest.approx(d2, rel=1e-4)


def test_pdu_resume_restores_the_dual_bit_identically(
    target_model, embedded, tmp_path, monkeypatch
):
    """A PDU run preempted after its step-4 checkpoint and resumed ends with the weights, the
    dual trajectory and the final dual of the uninterrupted run, bit for bit; a checkpoint
    without the dual is refused rather than resumed from dual_init."""
    import json

    train = dict(
        max_steps=6,
        optimizer="adamw",
        lr=1e-3,
        max_grad_norm=1.0,
        save_every=2,
        keep_checkpoints=5,
        micro_batch_size=4,
        grad_accum=2,
    )
    full = run(
        parse_run_config(run_config(target_model, tmp_path / "full", PDU_METHOD, embedded, **train))
    )
    cfg = parse_run_config(
        run_config(target_model, tmp_path / "cut", PDU_METHOD, embedded, **train)
    )
    real_step = backend_mod.LocalBackend.step
    monkeypatch.setattr(backend_mod.LocalBackend, "step", _preempted_at(5))
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    monkeypatch.setattr(backend_mod.LocalBackend, "step", real_step)
    ckpt = tmp_path / "cut" / "checkpoints" / "step-000004"
    saved = torch.load(ckpt / "state.pt", weights_only=False)["dual"]
    (full_log,) = [read_log(tmp_path / "full")]
    print(f"pdu dual: {[r['dual'] for r in full_log]}, checkpointed after step 4: {saved}")
    assert saved == full_log[4]["dual"] and saved > 2 * PDU_METHOD["dual_init"], (
        "the dual barely moved: the resume test would not see a lost dual"
    )
    resumed = run(cfg)

    a, b = load_weights(full.model_dir), load_weights(resumed.model_dir)
    assert all(torch.equal(a[k], b[k]) for k in a), f"max abs diff {max_abs_diff(a, b)}"
    log = read_log(tmp_path / "cut")
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert [r["dual"] for r in log] == [r["dual"] for r in full_log]
    summaries = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("full", "cut")]
    assert summaries[1]["resumed_from"] == 4
    assert summaries[0]["dual"] == summaries[1]["dual"] is not None
    _check_pdu_log(log, PDU_METHOD)

    state = torch.load(ckpt / "state.pt", weights_only=False)
    torch.save({**state, "dual": None}, ckpt / "state.pt")
    with pytest.raises(RuntimeError, match="holds no PDU dual"):
        run(cfg)


def test_pdu_dual_falls_to_zero_when_the_constraint_is_slack(target_model, embedded, tmp_path):
    """With eps far above the retain loss the dual is projected to 0 and the update is the
    forget gradient alone (d = F: ||d|| = ||F||)."""
    method = {**PDU_METHOD, "retain_loss_eps": 50.0, "dual_step_size": 1.0, "dual_warmup_steps": 0}
    run(
        parse_run_config(run_config(target_model, tmp_path, method, embedded, max_steps=3, lr=1e-3))
    )
    log = read_log(tmp_path)
    assert [r["dual"] for r in log] == [0.5, 0.0, 0.0]
    assert log[2]["update_norm_raw"] == pytest.approx(log[2]["norm_f"], rel=1e-6)
    _check_pdu_log(log, method)


def test_nan_loss_stops_run_and_writes_no_model(target_model, embedded, tmp_path, monkeypatch):
    real = step_mod.forget_loss
    calls = {"n": 0}

    def nan_on_third(model, batch, ctx):
        calls["n"] += 1
        loss = real(model, batch, ctx)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(step_mod, "forget_loss", nan_on_third)
    method = {"name": "blur", "forget_loss": "npo", "retain_loss": "nll"}
    with pytest.raises(NonFiniteError, match=r"at step 3 of 5"):
        run(
            parse_run_config(
                run_config(
                    target_model,
                    tmp_path,
                    method,
                    embedded,
                    max_steps=5,
                    optimizer="adamw",
                    lr=1e-3,
                )
            )
        )
    assert not (tmp_path / "model").exists()
    assert [r["step"] for r in read_log(tmp_path)] == [1, 2]


def test_failed_rerun_removes_stale_final_model(target_model, embedded, tmp_path, monkeypatch):
    method = {"name": "graddiff"}
    run(
        parse_run_config(run_config(target_model, tmp_path, method, embedded, max_steps=1, lr=1e-3))
    )
    assert (tmp_path / "model").exists()
    monkeypatch.setattr(
        step_mod, "retain_loss", lambda m, b, c: torch.tensor(float("inf"), requires_grad=True)
    )
    with pytest.raises(NonFiniteError):
        run(
            parse_run_config(
                run_config(target_model, tmp_path, method, embedded, max_steps=1, lr=1e-3)
            )
        )
    assert not (tmp_path / "model").exists()


def test_bad_inputs_name_the_problem(target_model, embedded, tmp_path):
    good = run_config(target_model, tmp_path, {"name": "blur"}, embedded)
    with pytest.raises(ConfigError, match="unknown method 'blurr'"):
        parse_run_config({**good, "method": {"name": "blurr"}})
    with pytest.raises(ConfigError, match="gama"):
        parse_run_config({**good, "method": {"name": "blur", "gama": 0.1}})
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(ConfigError, match=r"nope\.jsonl"):
        parse_run_config({**good, "data": {**good["data"], "forget": str(missing)}})
    with pytest.raises(ValueError, match="rmu_layer = 9"):
        run(
            parse_run_config(
                run_config(
                    target_model, tmp_path / "rmu", {"name": "rmu", "rmu_layer": 9}, embedded
                )
            )
        )


def test_checkpoints_of_other_settings_are_not_resumed(
    target_model, embedded, tmp_path, monkeypatch
):
    """A rerun with a changed setting starts afresh instead of resuming a stale checkpoint."""
    import json

    method = {"name": "blur", "forget_loss": "npo", "retain_loss": "nll", "gamma": 0.2}
    train = dict(max_steps=4, optimizer="adamw", lr=1e-3, save_every=2)
    real_step = backend_mod.LocalBackend.step
    monkeypatch.setattr(backend_mod.LocalBackend, "step", _preempted_at(3))
    with pytest.raises(KeyboardInterrupt):
        run(parse_run_config(run_config(target_model, tmp_path, method, embedded, **train)))
    assert (tmp_path / "checkpoints" / "step-000002").is_dir()
    monkeypatch.setattr(backend_mod.LocalBackend, "step", real_step)

    changed = {**method, "gamma": 0.3}
    run(parse_run_config(run_config(target_model, tmp_path, changed, embedded, **train)))
    assert json.loads((tmp_path / "summary.json").read_text())["resumed_from"] == 0
    assert [r["step"] for r in read_log(tmp_path)] == [1, 2, 3, 4]
    # bookkeeping settings (how often to save) do not invalidate a checkpoint
    fresh = run_config(target_model, tmp_path, changed, embedded, **{**train, "save_every": 3})
    from blur_core.train.loop import run_fingerprint

    assert run_fingerprint(parse_run_config(fresh)) == run_fingerprint(
        parse_run_config(run_config(target_model, tmp_path, changed, embedded, **train))
    )


def test_exported_step_weights_equal_a_run_stopped_there(
    target_model, embedded, tmp_path, monkeypatch
):
    """train.export_steps writes the weights after step N (per-checkpoint evaluation): they
    equal the final weights of the same run with max_steps = N, and exporting leaves the
    training itself unchanged (same final weights as a run without exports). A resume never
    skips a missing export: with the exports gone (Snakemake removes a restarted job's
    outputs) the run resumes from a checkpoint at or before the first missing one."""
    import json
    import shutil

    method = {"name": "blur", "forget_loss": "npo", "retain_loss": "nll", "gamma": 0.2}
    train = dict(max_steps=5, optimizer="adamw", lr=1e-3, max_grad_norm=1.0, micro_batch_size=4)
    exported = run(
        parse_run_config(
            run_config(
                target_model, tmp_path / "exp", method, embedded, export_steps=[2, 4], **train
            )
        )
    )
    plain = run(
        parse_run_config(run_config(target_model, tmp_path / "plain", method, embedded, **train))
    )
    a, b = load_weights(exported.model_dir), load_weights(plain.model_dir)
    assert all(torch.equal(a[k], b[k]) for k in a), f"max abs diff {max_abs_diff(a, b)}"
    for n in (2, 4):
        stopped = run(
            parse_run_config(
                run_config(
                    target_model,
                    tmp_path / f"stop{n}",
                    method,
                    embedded,
                    **{**train, "max_steps": n},
                )
            )
        )
        step_dir = tmp_path / "exp" / "steps_weights" / str(n)
        assert (step_dir / "config.json").is_file() and (step_dir / "run_config.yaml").is_file()
        a, b = load_weights(step_dir), load_weights(stopped.model_dir)
        assert all(torch.equal(a[k], b[k]) for k in a), f"step {n}: {max_abs_diff(a, b)}"
    assert sorted(p.name for p in (tmp_path / "exp" / "steps_weights").iterdir()) == ["2", "4"]

    # preempted after step 5's checkpoint would be written; exports removed before the restart
    cfg = parse_run_config(
        run_config(
            target_model,
            tmp_path / "cut",
            method,
            embedded,
            export_steps=[3],
            save_every=2,
            keep_checkpoints=5,
            **{**train, "max_steps": 6},
        )
    )
    real_step = backend_mod.LocalBackend.step
    monkeypatch.setattr(backend_mod.LocalBackend, "step", _preempted_at(6))
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    assert (tmp_path / "cut" / "checkpoints" / "step-000004").is_dir()
    shutil.rmtree(tmp_path / "cut" / "steps_weights")
    monkeypatch.setattr(backend_mod.LocalBackend, "step", real_step)
    run(cfg)
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["resumed_from"] == 2
    a = load_weights(tmp_path / "cut" / "steps_weights" / "3")
    b = load_weights(
        run(
            parse_run_config(
                run_config(
                    target_model, tmp_path / "stop3", method, embedded, **{**train, "max_steps": 3}
                )
            )
        ).model_dir
    )
    assert all(torch.equal(a[k], b[k]) for k in a), f"resumed step 3: {max_abs_diff(a, b)}"
    with pytest.raises(ConfigError, match=r"export_steps = \[7\]: step 7 is beyond"):
        parse_run_config(
            run_config(target_model, tmp_path / "x", method, embedded, export_steps=[7], **train)
        )
    with pytest.raises(ConfigError, match="increasing order"):
        parse_run_config(
            run_config(target_model, tmp_path / "x", method, embedded, export_steps=[3, 2], **train)
        )
