# Base models and the two fine-tuned models every unlearning run is compared against:
#   target = base fine-tuned on the full set (what unlearning starts from),
#   retain = base fine-tuned on the retain split only (the oracle for forget quality).


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
        args=model_args,
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
        gpu=0,
    params:
        cfg=finetune_config,
    shell:
        "python -m blur_core unlearn --config-json {params.cfg:q} > {log} 2>&1"
