# Relearning attack (config `relearn`): each unlearned model is fine-tuned (sft) for K
# optimizer steps on the first `fraction` of the forget set, then evaluated like any other
# model (TOFU metrics, forget quality vs the retain model): does the forgotten knowledge
# come back after a little training? The relearned weights are temp (only eval.json stays).


rule relearn_data:
    input:
        f"{R}/data/{{bench}}",
    output:
        f"{R}/relearn_data/{{bench}}.jsonl",
    log:
        f"{R}/logs/relearn_data/{{bench}}.log",
    conda:
        "../../envs/blur.yaml"
    params:
        code=CODE["slice-data"],
        args=relearn_slice_args,
    shell:
        "python -m blur_core slice-data {params.args} --out {output} > {log} 2>&1"


rule relearn:
    input:
        model=f"{R}/{{bench}}/{{model}}/runs/{{entry}}/{{tag}}/model",
        data=f"{R}/relearn_data/{{bench}}.jsonl",
    output:
        model=temp(
            directory(f"{R}/{{bench}}/{{model}}/runs/{{entry}}/{{tag}}/relearn/k{{k}}/model")
        ),
        summary=f"{R}/{{bench}}/{{model}}/runs/{{entry}}/{{tag}}/relearn/k{{k}}/summary.json",
    log:
        f"{R}/logs/relearn/{{bench}}/{{model}}/{{entry}}/{{tag}}/k{{k}}.log",
    benchmark:
        f"{R}/benchmarks/relearn/{{bench}}/{{model}}/{{entry}}/{{tag}}/k{{k}}.tsv"
    conda:
        "../../envs/blur.yaml"
    threads: 1
    resources:
        gpu=GPU_RESOURCES["relearn"]["gpu"],
        gres=GPU_RESOURCES["relearn"]["gres"],
        nodes=GPU_RESOURCES["relearn"].get("nodes", 1),
    params:
        code=CODE["unlearn"],
        cfg=relearn_config,
        launch=relearn_launcher,
    shell:
        'echo "=== relearn attempt $(date -u +%FT%TZ) on $(hostname): SLURM_JOB_ID=${{SLURM_JOB_ID:-none}}'
        ' CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-unset}} launch: {params.launch}" >> {log}; '
        "{params.launch} blur_core unlearn --config-json {params.cfg:q} >> {log} 2>&1"
