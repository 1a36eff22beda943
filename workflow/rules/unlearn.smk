# One unlearning job per (benchmark, model, sweep entry, grid values, seed).
# The final weights land in `final/` (temp: removed once `convert` has consumed them).


rule unlearn:
    input:
        target=target_model_input,
        data=f"{R}/data/{{bench}}",
    output:
        final=temp(directory(f"{R}/{{bench}}/{{model}}/runs/{{entry}}/{{tag}}/final")),
        log_jsonl=f"{R}/{{bench}}/{{model}}/runs/{{entry}}/{{tag}}/train_log.jsonl",
        summary=f"{R}/{{bench}}/{{model}}/runs/{{entry}}/{{tag}}/summary.json",
    params:
        cfg=unlearn_config,
        launch=launcher,
    threads: 1
    resources:
        gpu=config["unlearn"]["gpus"],
    log:
        f"{R}/logs/unlearn/{{bench}}/{{model}}/{{entry}}/{{tag}}.log",
    benchmark:
        f"{R}/benchmarks/unlearn/{{bench}}/{{model}}/{{entry}}/{{tag}}.tsv"
    conda:
        "../../envs/blur.yaml"
    shell:
        "{params.launch} blur_core unlearn --config-json {params.cfg:q} > {log} 2>&1"
