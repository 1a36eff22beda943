# prepare_data: one benchmark in the TOFU hub layout under R/data/{bench}
# (embedded: generated deterministically; tofu: validated and linked from a local copy).


rule prepare_data:
    output:
        directory(f"{R}/data/{{bench}}"),
    params:
        args=data_args,
    log:
        f"{R}/logs/prepare_data/{{bench}}.log",
    conda:
        "../../envs/blur.yaml"
    shell:
        "python -m blur_core prepare-data {params.args} --out {output} > {log} 2>&1"
