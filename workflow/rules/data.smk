# prepare_data: one benchmark in the TOFU hub layout under R/data/{bench}
# (embedded: generated deterministically; tofu: validated and linked from a local copy).


rule prepare_data:
    output:
        directory(f"{R}/data/{{bench}}"),
    log:
        f"{R}/logs/prepare_data/{{bench}}.log",
    conda:
        "../../envs/blur.yaml"
    params:
        code=CODE["prepare-data"],
        args=data_args,
    shell:
        "python -m blur_core prepare-data {params.args} --out {output} > {log} 2>&1"
