# Rule report: figures and tables of each experiment, shown by `snakemake --report report.html`.


report: "../report/workflow.rst"


rule report:
    input:
        metrics=trained_metrics,
        tracking=own_tracking,
        plan=trained_plan,
        per_case=rules.evaluate.output.per_case,
        summary=rules.evaluate.output.summary,
        manifest=rules.ingest.output.manifest,
        classes=rules.ingest.output.classes,
        predictions=rules.predict.output[0],
    output:
        curves=report(
            f"{RESULTS}/{{experiment}}/report/training_curves.png",
            caption="../report/training_curves.rst",
            category="{experiment}",
            subcategory="training",
            labels={"experiment": "{experiment}", "figure": "training curves"},
        ),
        distributions=report(
            f"{RESULTS}/{{experiment}}/report/metric_distributions.png",
            caption="../report/metric_distributions.rst",
            category="{experiment}",
            subcategory="evaluation",
            labels={"experiment": "{experiment}", "figure": "metric distributions"},
        ),
        overlays=report(
            f"{RESULTS}/{{experiment}}/report/overlays.png",
            caption="../report/overlays.rst",
            category="{experiment}",
            subcategory="evaluation",
            labels={"experiment": "{experiment}", "figure": "best, median and worst case"},
        ),
        tables=report(
            f"{RESULTS}/{{experiment}}/report/metrics.html",
            caption="../report/metrics_table.rst",
            category="{experiment}",
            subcategory="evaluation",
            labels={"experiment": "{experiment}", "figure": "metric tables"},
        ),
    log:
        f"{RESULTS}/logs/{{experiment}}/report.log",
    conda:
        "../../envs/report.yaml"
    params:
        trained_by=lambda wc: TRAINED_BY[wc.experiment],
    script:
        "../scripts/report.py"
