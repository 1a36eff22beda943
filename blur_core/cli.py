"""Command line: ``python -m blur_core <command> ...`` (thin entry points over the library).

Commands:
  unlearn         train one run from RUN.yaml (any registered method, incl. sft fine-tuning)
  make-embedded   write the embedded fictitious-people QA set and a tiny Llama built offline
  score           answer NLL / probability of models on QA files (a quick before/after check)
  methods         list registered methods and their hyperparameters with defaults
  convert         consolidate a DeepSpeed ZeRO checkpoint into an HF model dir (safetensors)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

__all__ = ["main"]


def _parse_set(items: list[str]) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"--set expects KEY=VALUE (e.g. train.lr=1e-4), got {item!r}")
        key, value = item.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def cmd_unlearn(args: argparse.Namespace) -> int:
    from blur_core.train.config import load_run_config
    from blur_core.train.loop import run

    cfg = load_run_config(args.config, _parse_set(args.set))
    result = run(cfg)
    if result.model_dir is not None:
        print(f"final model: {result.model_dir}  ({result.steps} steps; log: "
              f"{result.output_dir / 'train_log.jsonl'})")
    return 0


def cmd_make_embedded(args: argparse.Namespace) -> int:
    from blur_core.tiny import prepare_embedded

    paths = prepare_embedded(args.out, n_people=args.people, questions_per_person=args.questions_per_person,
                             forget_fraction=args.forget_fraction, seed=args.seed,
                             hidden_size=args.hidden_size, num_layers=args.layers)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from blur_core.scoring import format_table, score_models

    data = {}
    for item in args.data:
        name, _, path = item.partition("=")
        if not path:
            raise SystemExit(f"--data expects NAME=FILE, got {item!r}")
        data[name] = path
    rows = score_models(args.model, data, batch_size=args.batch_size, max_length=args.max_length)
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from blur_core.methods import METHODS, resolved_hparams

    for name in sorted(METHODS):
        doc = (METHODS[name].__doc__ or "").strip().splitlines()[0]
        print(f"{name}: {doc}")
        for key, value in resolved_hparams(name).items():
            print(f"    {key}: {value!r}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from blur_core.checkpoint import convert_checkpoint

    out = convert_checkpoint(args.ckpt_dir, args.out_dir, hf_dir=args.hf_dir, tag=args.tag)
    print(f"HF model dir: {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m blur_core", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("unlearn", help="run one unlearning (or sft) job from RUN.yaml",
                       description="Train one run. RUN.yaml keys: model, output_dir, method "
                                   "{name, hyperparameters...}, data {forget, retain, format, max_length, ...}, "
                                   "train {max_steps|epochs, micro_batch_size, grad_accum, lr, schedule, ...}. "
                                   "See blur_core/train/config.py. Launch with torchrun for data parallelism.")
    p.add_argument("--config", required=True, help="RUN.yaml")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.lr=1e-4 --set method.gamma=0.3")
    p.set_defaults(func=cmd_unlearn)

    p = sub.add_parser("make-embedded", help="write the embedded QA benchmark and a tiny base model")
    p.add_argument("--out", required=True, help="output directory (gets data/ and base_model/)")
    p.add_argument("--people", type=int, default=20)
    p.add_argument("--questions-per-person", type=int, default=5)
    p.add_argument("--forget-fraction", type=float, default=0.1)
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_make_embedded)

    p = sub.add_parser("score", help="answer NLL / probability of one or more models on QA files")
    p.add_argument("--model", action="append", required=True, help="model dir (repeat for several)")
    p.add_argument("--data", action="append", required=True, metavar="NAME=FILE", help="QA file (repeatable)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--json", help="also write the rows as JSON here")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("methods", help="list methods and their hyperparameters")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("convert", help="ZeRO checkpoint -> HF model dir (model.safetensors, config, tokenizer)",
                       description="Consolidate the fp32 master weights of a DeepSpeed ZeRO-2/3 checkpoint "
                                   "(e.g. RUN/checkpoints/step-000010) into OUT_DIR, loadable with "
                                   "AutoModelForCausalLM.from_pretrained. config.json, tokenizer and run "
                                   "config come from CKPT_DIR/hf (written by the DeepSpeed backend) or --hf-dir. "
                                   "An HF model dir (the local backend's output) is copied as is.")
    p.add_argument("ckpt_dir", help="checkpoint dir holding DeepSpeed's 'latest' file and shards")
    p.add_argument("out_dir", help="output HF model dir (replaced if it exists)")
    p.add_argument("--hf-dir", help="dir with config.json/tokenizer to copy (default: CKPT_DIR/hf)")
    p.add_argument("--tag", help="DeepSpeed checkpoint tag (default: the one in 'latest')")
    p.set_defaults(func=cmd_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    from blur_core.config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
