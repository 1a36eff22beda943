# Per-checkpoint evaluation and selection (config unlearn.eval_checkpoints / unlearn.select;
# without them no rule of this file exists). The unlearn job exports the weights after each
# listed step to steps_weights/N/ (temp); convert_step turns step N into steps/N/model (temp),
# which the evaluate rule scores as unit runs/E/T/steps/N (its eval.json stays). select_checkpoint
# reads the run's per-step and final evaluations (and the target's / retain model's, for
# relative constraints) and writes selected/selection.json: the chosen step, the criterion,
# each candidate's values and why it was or was not chosen (blur_core/selection.py).

if STUDY.checkpoints:

    rule convert_step:
        input:
            f"{R}/{{bench}}/{{model}}/runs/{{entry}}/{{tag}}/steps_weights",
        output:
            temp(directory(f"{R}/{{bench}}/{{model}}/runs/{{entry}}/{{tag}}/steps/{{step}}/model")),
        log:
            f"{R}/logs/convert_step/{{bench}}/{{model}}/{{entry}}/{{tag}}/{{step}}.log",
        conda:
            "../../envs/blur.yaml"
        params:
            code=CODE["convert"],
            args=convert_args,
        shell:
            "python -m blur_core convert {input}/{wildcards.step} {output} {params.args} > {log} 2>&1"


if STUDY.selection is not None:

    rule select_checkpoint:
        input:
            unpack(select_inputs),
        output:
            f"{R}/{{bench}}/{{model}}/runs/{{entry}}/{{tag}}/selected/selection.json",
        log:
            f"{R}/logs/select_checkpoint/{{bench}}/{{model}}/{{entry}}/{{tag}}.log",
        conda:
            "../../envs/blur.yaml"
        params:
            code=CODE["select-checkpoint"],
            criterion=select_criterion,
            args=select_args,
        shell:
            "python -m blur_core select-checkpoint --criterion-json {params.criterion:q} "
            "--steps {input.steps} --final {input.final} --summary {input.summary} "
            "--target {input.target} {params.args} --out {output} > {log} 2>&1"

    # `snakemake selected`: every run's selection (the report waits for them as well)
    rule selected:
        input:
            all_selection_files(),
