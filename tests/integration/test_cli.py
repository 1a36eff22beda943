"""The command line: help, a full embedded run through subprocesses, and error exits."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from blur_core.cli import main
from tests.integration.helpers import run_config


def _cli(*args, timeout=300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "blur_core", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def test_help_lists_commands_and_config_keys():
    proc = _cli("--help")
    assert proc.returncode == 0
    for cmd in ("unlearn", "make-embedded", "score", "methods"):
        assert cmd in proc.stdout
    proc = _cli("unlearn", "--help")
    assert proc.returncode == 0 and "--config" in proc.stdout and "max_steps" in proc.stdout


def test_methods_command_lists_registry(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in ("blur", "graddiff", "npo", "simnpo", "idk", "rmu", "ga", "sft"):
        assert f"{name}:" in out
    assert "gamma: 0.1" in out


def test_make_embedded_unlearn_score_end_to_end(tmp_path):
    proc = _cli("make-embedded", "--out", str(tmp_path / "emb"), "--people", "6")
    assert proc.returncode == 0, proc.stderr
    data = tmp_path / "emb" / "data"
    cfg = run_config(
        tmp_path / "emb" / "base_model",
        tmp_path / "run",
        {"name": "blur", "gamma": 0.2},
        {"forget": data / "forget.jsonl", "retain": data / "retain.jsonl"},
        max_steps=2,
        optimizer="adamw",
        lr=1e-3,
    )
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    proc = _cli("unlearn", "--config", str(tmp_path / "run.yaml"), "--set", "method.gamma=0.4")
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load((tmp_path / "run" / "model" / "run_config.yaml").read_text())
    assert resolved["method"]["gamma"] == 0.4 and resolved["method"]["variant"] == "forget_priority"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["world_size"] == 1 and summary["tokens_per_s"] > 0
    proc = _cli(
        "score",
        "--model",
        str(tmp_path / "run" / "model"),
        "--data",
        f"forget={data / 'forget.jsonl'}",
    )
    assert proc.returncode == 0, proc.stderr
    assert "| forget |" in proc.stdout


def test_bad_config_exits_2_naming_key_and_file(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": "m",
                "output_dir": "o",
                "method": {"name": "blur"},
                "train": {"max_steps": 1, "lerning_rate": 0.1},
            }
        )
    )
    assert main(["unlearn", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "train.lerning_rate" in err and str(path) in err
    assert main(["unlearn", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
