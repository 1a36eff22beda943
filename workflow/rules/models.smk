# Base models and the two models every unlearning run is compared against:
#   target = base fine-tuned on the full set (what unlearning starts from),
#   retain = base fine-tuned on the retain split only (the oracle for forget quality),
# or, with experiments[i].target / .retain, published checkpoints imported once (no fine-tune).
# Training jobs start through the stage's launcher (python -m, torchrun, srun + torchrun);
# the log starts each attempt with the host, SLURM job id and CUDA_VISIBLE_DEVICES.


rule prepare_embedded_model:
    input:
        data=f"{R}/data/{{bench}}",
    output:
        directory(f"{R}/models/{{bench}}/{{model}}/base"),
    log:
        f"{R}/logs/prepare_model/{{bench}}/{{model}}.log",
    conda:
        "../../envs/blur.yaml"
    params:
        code=CODE["prepare-model"],
        args=embedded_model_args,
    shell:
        "python -m blur_core prepare-model --embedded-bench {input.data} {params.args} --out {output} > {log} 2>&1"


rule import_model:
    output:
        directory(f"{R}/models/imported/{{model}}"),
    log:
        f"{R}/logs/import_model/{{model}}.log",
    conda:
        "../../envs/blur.yaml"
    params:
        code=CODE["import-model"],
        args=model_args,
    shell:
        "python -m blur_core import-model {params.args} --out {output} > {log} 2>&1"


rule import_published:
    output:
        directory(f"{R}/{{bench}}/{{model}}/published/{{kind}}/model"),
    log:
        f"{R}/logs/import_published/{{bench}}/{{model}}/{{kind}}.log",
    conda:
        "../../envs/blur.yaml"
    params:
        code=CODE["import-model"],
        args=published_args,
    shell:
        "python -m blur_core import-model {params.args} --out {output} > {log} 2>&1"


rule finetune:
    input:
        base=base_model_input,
        data=f"{R}/data/{{bench}}",
    output:
        model=directory(f"{R}/{{bench}}/{{model}}/finetune/{{kind}}/model"),
        log_jsonl=f"{R}/{{bench}}/{{model}}/finetune/{{kind}}/train_log.jsonl",
        summary=f"{R}/{{bench}}/{{model}}/finetune/{{kind}}/summary.json",
    log:
        f"{R}/logs/finetune/{{bench}}/{{model}}/{{kind}}.log",
    benchmark:
        f"{R}/benchmarks/finetune/{{bench}}/{{model}}/{{kind}}.tsv"
    conda:
        "../../envs/blur.yaml"
    threads: 2
    resources:
        gpu=GPU_RESOURCES["finetune"]["gpu"],
        gres=GPU_RESOURCES["finetune"]["gres"],
        nodes=GPU_RESOURCES["finetune"].get("nodes", 1),
    params:
        code=CODE["unlearn"],
        cfg=finetune_config,
        launch=finetune_launcher,
    shell:
        'echo "=== finetune attempt $(date -u +%FT%TZ) on $(hostname): SLURM_JOB_ID=${{SLURM_JOB_ID:-none}}'
        ' CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-unset}} launch: {params.launch}" >> {log}; '
        "{params.launch} blur_core unlearn --config-json {params.cfg:q} >> {log} 2>&1"
