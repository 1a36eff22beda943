# Snakemake glue (no rules here): validate the config, then input / params functions that
# call blur_core.pipeline.Study, where the cross-field checks, the sweep's runs, the result
# paths and every job's settings live (and are unit-tested: tests/unit/test_pipeline.py).
# The results layout is described in blur_core/pipeline/study.py.

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from blur_core.config import ConfigError
from blur_core.pipeline import Study, to_json


def _config_files():
    files = [str(f) for f in (workflow.overwrite_configfiles or workflow.configfiles or [])]
    return ", ".join(files) or "config.yaml"


try:
    validate(config, "../schemas/config.schema.yaml")
except WorkflowError as exc:
    raise WorkflowError(f"invalid configuration in {_config_files()}:\n{exc}") from None
try:
    STUDY = Study(config)
except ConfigError as exc:
    raise WorkflowError(f"invalid configuration in {_config_files()}: {exc}") from None

R = STUDY.results
SUITES = STUDY.suites
# resources of the training rules (gpu / gres / nodes), from each stage's settings
GPU_RESOURCES = {stage: STUDY.gpu_resources(stage) for stage in ("finetune", "unlearn", "relearn")}


def run_of(wildcards):
    try:
        return STUDY.run_of(wildcards.bench, wildcards.model, wildcards.entry, wildcards.tag)
    except KeyError as exc:
        raise WorkflowError(f"{exc.args[0]} of {_config_files()}") from None


# ----------------------------------------------------------------------------- targets


def all_eval_files():
    return STUDY.eval_files()


def all_suite_files():
    return STUDY.suite_files()


def all_train_summaries():
    return STUDY.train_summaries()


def suite_outputs():
    return STUDY.suite_outputs()


def all_checkpoint_eval_files():
    return STUDY.checkpoint_eval_files()


def all_selection_files():
    return STUDY.selection_files()


# the unlearn rule's exported step weights (temp; none without unlearn.eval_checkpoints)
UNLEARN_STEP_OUTPUTS = {k: temp(directory(v)) for k, v in STUDY.unlearn_step_outputs().items()}


# ----------------------------------------------------------------------------- inputs


def base_model_input(wildcards):
    return STUDY.base_model_dir(wildcards.bench, wildcards.model)


def target_model_input(wildcards):
    return STUDY.target_model(wildcards.bench, wildcards.model)


def eval_model_input(wildcards):
    return f"{STUDY.unit_dir(wildcards.bench, wildcards.model, wildcards.unit)}/model"


def retain_eval_input(wildcards):
    return STUDY.retain_eval(wildcards.bench, wildcards.model, wildcards.unit)


def retain_suites_input(wildcards):
    return STUDY.retain_suites(wildcards.bench, wildcards.model, wildcards.unit)


# ----------------------------------------------------------------------------- params


def data_args(wildcards):
    return STUDY.data_args(wildcards.bench)


def model_args(wildcards):
    return STUDY.model_args(wildcards.model)


def published_args(wildcards):
    return STUDY.published_args(wildcards.bench, wildcards.model, wildcards.kind)


def convert_args(wildcards):
    return STUDY.convert_args(run_of(wildcards))


def embedded_model_args(wildcards):
    return STUDY.embedded_model_args(wildcards.model)


def finetune_config(wildcards):
    return to_json(STUDY.finetune_config(wildcards.bench, wildcards.model, wildcards.kind))


def unlearn_config(wildcards):
    return to_json(STUDY.unlearn_config(run_of(wildcards)))


def finetune_launcher(wildcards, threads, resources):
    return STUDY.launcher("finetune", resources)


def unlearn_launcher(wildcards, threads, resources):
    return STUDY.launcher("unlearn", resources)


def relearn_launcher(wildcards, threads, resources):
    return STUDY.launcher("relearn", resources)


def relearn_config(wildcards):
    return to_json(STUDY.relearn_config(run_of(wildcards), int(wildcards.k)))


def relearn_slice_args(wildcards):
    return STUDY.relearn_slice_args(wildcards.bench)


# the code fingerprint of each command (in params, so that an edit to that code reruns its jobs)
CODE = STUDY.code_fingerprints()


def eval_code(wildcards):
    return CODE[STUDY.eval_command(wildcards.bench)]


def eval_command(wildcards):
    return STUDY.eval_command(wildcards.bench)


def eval_params(wildcards):
    return STUDY.eval_args(wildcards.bench, wildcards.model)


def model_options(wildcards):
    return STUDY.model_options(wildcards.bench, wildcards.model)


def retain_eval_arg(wildcards):
    return STUDY.retain_eval_arg(wildcards.bench, wildcards.model, wildcards.unit)


def suites_json(wildcards):
    return to_json(STUDY.suites_spec(wildcards.bench))


def suites_out_dir(wildcards):
    return f"{STUDY.unit_dir(wildcards.bench, wildcards.model, wildcards.unit)}/suites"


def retain_suites_arg(wildcards):
    return STUDY.retain_suites_arg(wildcards.bench, wildcards.model, wildcards.unit)


def report_out_dir(wildcards):
    return STUDY.report_dir()


def report_checkpoint_args(wildcards):
    return STUDY.report_checkpoint_args()


def select_inputs(wildcards):
    return STUDY.select_inputs(run_of(wildcards))


def select_criterion(wildcards):
    return to_json(STUDY.select_spec())


def select_args(wildcards):
    return STUDY.select_args(run_of(wildcards))
