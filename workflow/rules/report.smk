# One row per model (target, retain, every run): summary.csv / summary.md, the forget
# quality vs model utility trade-off plot, all registered for `snakemake --report`.


rule report:
    input:
        evals=all_eval_files(),
        summaries=all_train_summaries(),
    output:
        csv=report(f"{R}/report/summary.csv", caption="../report/summary.rst", category="Summary"),
        md=f"{R}/report/summary.md",
        plot=report(f"{R}/report/tradeoff.png", caption="../report/tradeoff.rst", category="Trade-off"),
    params:
        out_dir=report_out_dir,
    log:
        f"{R}/logs/report.log",
    conda:
        "../../envs/blur.yaml"
    shell:
        "python -m blur_core report --out-dir {params.out_dir} "
        "--evals {input.evals} > {log} 2>&1"
