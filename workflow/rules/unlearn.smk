# One unlearning job per (benchmark, model, sweep entry, grid values, seed).
# The final weights land in `final/` (temp: removed once `convert` has consumed them); with
# unlearn.eval_checkpoints the weights after those steps land in `steps_weights/N/` (temp,
# see checkpoints.smk).
#
# Preemption / restarts: with unlearn.train.save_every > 0 the run writes
# `checkpoints/step-N/` (not a declared output, so they survive a failed, killed or
# requeued job) and a rerun continues from the latest one (train.resume: auto) to the same
# final weights. Each checkpoint carries a fingerprint of the run's settings, data and
# starting model (blur_core.train.loop.run_fingerprint); when any of them changed (a real
# rerun, not a restart) blur_core discards the old checkpoints instead of resuming them.
# The log starts each attempt with the host, SLURM job id and CUDA_VISIBLE_DEVICES.


rule unlearn:
    input:
        target=target_model_input,
        data=f"{R}/data/{{bench}}",
    output:
        **UNLEARN_STEP_OUTPUTS,
        final=temp(directory(f"{R}/{{bench}}/{{model}}/runs/{{entry}}/{{tag}}/final")),
        log_jsonl=f"{R}/{{bench}}/{{model}}/runs/{{entry}}/{{tag}}/train_log.jsonl",
        summary=f"{R}/{{bench}}/{{model}}/runs/{{entry}}/{{tag}}/summary.json",
    log:
        f"{R}/logs/unlearn/{{bench}}/{{model}}/{{entry}}/{{tag}}.log",
    benchmark:
        f"{R}/benchmarks/unlearn/{{bench}}/{{model}}/{{entry}}/{{tag}}.tsv"
    conda:
        "../../envs/blur.yaml"
    threads: 1
    resources:
        gpu=GPU_RESOURCES["unlearn"]["gpu"],
        gres=GPU_RESOURCES["unlearn"]["gres"],
        nodes=GPU_RESOURCES["unlearn"].get("nodes", 1),
    params:
        code=CODE["unlearn"],
        cfg=unlearn_config,
        launch=unlearn_launcher,
    shell:
        'echo "=== unlearn attempt $(date -u +%FT%TZ) on $(hostname): SLURM_JOB_ID=${{SLURM_JOB_ID:-none}}'
        ' CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-unset}} launch: {params.launch}" >> {log}; '
        "{params.launch} blur_core unlearn --config-json {params.cfg:q} >> {log} 2>&1"
