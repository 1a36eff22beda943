# One row per model (target, retain, every run, every relearned run): summary.csv /
# summary.md (a TOFU table, one table per evaluation suite, a relearning table), the forget
# quality vs model utility trade-off plot and per-benchmark plots under plots/, all
# registered for `snakemake --report`. With unlearn.eval_checkpoints: each metric over the
# steps of every run (plots/checkpoints_*.png) and, with unlearn.select, each run's choice.


rule report:
    input:
        evals=all_eval_files(),
        summaries=all_train_summaries(),
        suites=all_suite_files(),
        checkpoint_evals=all_checkpoint_eval_files(),
        selections=all_selection_files(),
    output:
        csv=report(f"{R}/report/summary.csv", caption="../report/summary.rst", category="Summary"),
        md=f"{R}/report/summary.md",
        plot=report(
            f"{R}/report/tradeoff.png", caption="../report/tradeoff.rst", category="Trade-off"
        ),
        plots=report(
            directory(f"{R}/report/plots"),
            patterns=["{name}.png"],
            caption="../report/plots.rst",
            category="Benchmarks",
        ),
    log:
        f"{R}/logs/report.log",
    conda:
        "../../envs/blur.yaml"
    params:
        code=CODE["report"],
        out_dir=report_out_dir,
        checkpoints=report_checkpoint_args,
    shell:
        "python -m blur_core report --out-dir {params.out_dir} "
        "--evals {input.evals} {params.checkpoints} > {log} 2>&1"
