# Evaluation of one model (target, retain, or an unlearning run; in the model's dtype and prompt
# format, on a GPU when the job was granted one). QA benchmarks: the TOFU metrics (probability,
# ROUGE-L recall and truth ratio on forget/retain/utility sets, model utility, forget quality by
# a KS test against the retain model's truth ratios). Text corpora: their protocol (muse: VerbMem,
# KnowMem, PrivLeak vs the retain model; wmdp: forget / utility multiple choice). JSON with
# per-example values.


rule evaluate:
    input:
        model=eval_model_input,
        data=f"{R}/data/{{bench}}",
        retain=retain_eval_input,
    output:
        f"{R}/{{bench}}/{{model}}/{{unit}}/eval.json",
    log:
        f"{R}/logs/evaluate/{{bench}}/{{model}}/{{unit}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{{bench}}/{{model}}/{{unit}}.tsv"
    conda:
        "../../envs/blur.yaml"
    threads: 1
    params:
        code=eval_code,
        command=eval_command,
        args=eval_params,
        retain=retain_eval_arg,
    shell:
        "python -m blur_core {params.command} --model {input.model} --benchmark-dir {input.data} "
        "{params.args} {params.retain} --out {output} > {log} 2>&1"


# The extra suites of config `evaluations` (WMDP / MMLU / MUSE-News / tofu_mc / memorisation),
# all suites of one model in one job (one model load): suites/{name}.json. PrivLeak is
# relative to the retain model's AUC, so runs wait for the retain model's suites.

if SUITES:

    rule evaluate_suites:
        input:
            model=eval_model_input,
            data=f"{R}/data/{{bench}}",
            retain=retain_suites_input,
        output:
            suite_outputs(),
        log:
            f"{R}/logs/evaluate_suites/{{bench}}/{{model}}/{{unit}}.log",
        benchmark:
            f"{R}/benchmarks/evaluate_suites/{{bench}}/{{model}}/{{unit}}.tsv"
        conda:
            "../../envs/blur.yaml"
        threads: 1
        params:
            code=CODE["evaluate-suites"],
            suites=suites_json,
            retain=retain_suites_arg,
            out_dir=suites_out_dir,
            model=model_options,
        shell:
            "python -m blur_core evaluate-suites --model {input.model} --suites-json {params.suites:q} "
            "{params.retain} {params.model} --out-dir {params.out_dir} > {log} 2>&1"
