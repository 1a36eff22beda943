"""What the Snakemake workflow asks of the library: config checks, the sweep's runs,
result paths, each job's run config and launch line (``workflow/rules/*.smk`` only call
these, so they are unit-tested like the rest of ``blur_core``)."""

from blur_core.pipeline.launch import gpus_per_node, launch_prefix, ranks_per_node
from blur_core.pipeline.study import (
    BENCHMARK_BOUND_SUITES,
    REFERENCE_KINDS,
    TRAINING_STAGES,
    Experiment,
    Run,
    Study,
    to_json,
)
from blur_core.pipeline.tags import TAG_SEP, format_value, parse_tag, run_tag

__all__ = [
    "BENCHMARK_BOUND_SUITES",
    "REFERENCE_KINDS",
    "TAG_SEP",
    "TRAINING_STAGES",
    "Experiment",
    "Run",
    "Study",
    "format_value",
    "gpus_per_node",
    "launch_prefix",
    "parse_tag",
    "ranks_per_node",
    "run_tag",
    "to_json",
]
