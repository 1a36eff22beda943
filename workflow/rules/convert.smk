# The final weights of a run (an HF dir, or a ZeRO checkpoint under DeepSpeed) ->
# one consolidated HF model dir (model.safetensors, config, tokenizer, run config).


rule convert:
    input:
        f"{R}/{{bench}}/{{model}}/runs/{{entry}}/{{tag}}/final",
    output:
        directory(f"{R}/{{bench}}/{{model}}/runs/{{entry}}/{{tag}}/model"),
    log:
        f"{R}/logs/convert/{{bench}}/{{model}}/{{entry}}/{{tag}}.log",
    conda:
        "../../envs/blur.yaml"
    params:
        code=CODE["convert"],
        args=convert_args,
    shell:
        "python -m blur_core convert {input} {output} {params.args} > {log} 2>&1"
