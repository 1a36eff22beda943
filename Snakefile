# blur-pipeline: data -> base/target/retain models -> unlearn sweep -> convert -> evaluate -> report.
# Run:  snakemake            (local, uses profiles/default -> workflow/profiles/default)
#       snakemake --profile slurm   (cluster)
# The experiment is config.yaml; its schema is workflow/schemas/config.schema.yaml.

from snakemake.utils import min_version

min_version("9.0")


# config.yaml is the experiment unless --configfile names another: that file is then the whole
# experiment (not merged over config.yaml, so a study's keys are all it runs); --config k=v
# overrides single keys of either.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


include: "workflow/rules/common.smk"


wildcard_constraints:
    bench=r"[^/]+",
    model=r"[^/]+",
    entry=r"[^/]+",
    tag=r"[^/]+",
    kind=r"target|retain",
    unit=r"(finetune|published)/(target|retain)|runs/[^/]+/[^/]+(/relearn/k\d+|/steps/\d+)?",
    k=r"\d+",
    step=r"\d+",


include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/unlearn.smk"
include: "workflow/rules/convert.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/relearn.smk"
include: "workflow/rules/checkpoints.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        f"{R}/report/summary.csv",
        f"{R}/report/summary.md",
        f"{R}/report/tradeoff.png",
