"""Paper-scale paths of the library and CLI on the tiny model: hub ids read offline from a
filled Hugging Face cache, conversion in the model's dtype, bf16 evaluation on CPU, metrics
that are not available without a retain model, and the GPU check's code paths on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.hubcache import add_repo
from tests.integration.helpers import load_weights

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def offline_cache(tmp_path, monkeypatch):
    """An empty HF_HOME, offline; returns its hub cache dir (fill it with add_repo)."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf" / "hub"


def test_import_model_and_prepare_data_from_the_hub_cache(
    offline_cache, target_model, embedded, tmp_path, capsys
):
    from blur_core.cli import main
    from blur_core.data.embedded import write_embedded_tofu

    add_repo(offline_cache, "org/tiny", target_model)
    out = tmp_path / "imported"
    assert main(["import-model", "--hf", "org/tiny", "--out", str(out)]) == 0
    assert load_weights(out).keys() == load_weights(target_model).keys()
    assert all(torch.equal(load_weights(out)[k], v) for k, v in load_weights(target_model).items())

    write_embedded_tofu(tmp_path / "layout", n_people=10, questions_per_person=3, seed=0)
    add_repo(offline_cache, "org/tofu-mini", tmp_path / "layout", repo_type="dataset")
    data = tmp_path / "data"
    assert (
        main(
            ["prepare-data", "--benchmark", "tofu", "--source", "org/tofu-mini", "--out", str(data)]
        )
        == 0
    )
    link = data / "forget10.json"
    assert link.is_symlink() and "datasets--org--tofu-mini" in str(link.resolve())

    # a missing id: exit 2, the id and the command that fills the cache in the message
    capsys.readouterr()
    assert main(["import-model", "--hf", "org/absent", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "'org/absent' is a hub id, HF_HUB_OFFLINE=1" in err and "hf download org/absent" in err
    assert (
        main(
            [
                "prepare-data",
                "--benchmark",
                "tofu",
                "--source",
                "org/absent",
                "--out",
                str(tmp_path / "d"),
            ]
        )
        == 2
    )
    assert "hf download org/absent --repo-type dataset" in capsys.readouterr().err


def test_convert_casts_to_the_model_dtype(target_model, tmp_path):
    from transformers import AutoModelForCausalLM

    from blur_core.cli import main

    out = tmp_path / "bf16"
    assert main(["convert", str(target_model), str(out), "--dtype", "bfloat16"]) == 0
    ours, ref = load_weights(out), load_weights(target_model)
    assert all(v.dtype == torch.bfloat16 for v in ours.values())
    assert all(torch.equal(ours[k], ref[k].to(torch.bfloat16)) for k in ref)
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert next(model.parameters()).dtype == torch.bfloat16


def test_bf16_evaluation_and_no_retain_model(target_model, embedded, tmp_path):
    """`evaluate --dtype bfloat16` runs on CPU; with --no-retain-model forget quality is null and
    the reason is recorded."""
    from blur_core.cli import main
    from blur_core.data.embedded import write_embedded_tofu

    bench = tmp_path / "bench"
    write_embedded_tofu(bench, n_people=10, questions_per_person=5, seed=0)
    common = [
        "evaluate",
        "--model",
        str(target_model),
        "--benchmark-dir",
        str(bench),
        "--forget-split",
        "forget10",
        "--limit",
        "4",
        "--max-new-tokens",
        "4",
    ]
    out32, out16 = tmp_path / "fp32.json", tmp_path / "bf16.json"
    assert main([*common, "--out", str(out32), "--no-retain-model"]) == 0
    assert (
        main([*common, "--out", str(out16), "--dtype", "bfloat16", "--prompt-format", "plain"]) == 0
    )
    r32, r16 = json.loads(out32.read_text()), json.loads(out16.read_text())
    assert (
        r32["forget_quality"] is None and "no retain model" in r32["unavailable"]["forget_quality"]
    )
    assert "forget_quality" not in r16 or r16["forget_quality"] is None
    # bf16 scores the same answers to within bf16's precision
    p32 = r32["aggregates"]["retain"]["probability"]
    p16 = r16["aggregates"]["retain"]["probability"]
    assert abs(p32 - p16) < 0.05, (p32, p16)
    with pytest.raises(SystemExit, match="--prompt-format plain and --chat-template both set"):
        main(
            [
                *common,
                "--out",
                str(tmp_path / "x.json"),
                "--prompt-format",
                "plain",
                "--chat-template",
                "off",
            ]
        )


@pytest.mark.slow
def test_gpu_check_runs_its_code_paths_on_cpu(tmp_path):
    """benchmarks/gpu_check.py --size tiny: every configuration of the GPU table (local, ZeRO-2,
    ZeRO-3; BLUR and GradDiff), the combiner comparison and the evaluation rates."""
    pytest.importorskip("deepspeed")
    out = tmp_path / "gpu_check.md"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/gpu_check.py",
            "--size",
            "tiny",
            "--steps",
            "3",
            "--reps",
            "2",
            "--out",
            str(out),
        ],
        cwd=str(REPO),
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = out.read_text()
    for row in (
        "| local, 1 process |",
        "| ZeRO-2, 1 rank |",
        "| ZeRO-3, 1 rank |",
        "| blur_direction",
        "| reference-style",
        "| answer NLL |",
        "| greedy generation |",
    ):
        assert row in text, row
    ratios = [
        float(line.split("|")[4])
        for line in text.splitlines()
        if line.startswith(("| local", "| ZeRO"))
    ]
    assert len(ratios) == 3 and all(r > 0 for r in ratios)
