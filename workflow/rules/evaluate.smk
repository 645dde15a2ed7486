rule evaluate:
    input:
        predictions=rules.predict.output[0],
        manifest=rules.ingest.output.manifest,
        classes=rules.ingest.output.classes,
        regions=rules.ingest.output.regions,
        splits=rules.split.output[0],
    output:
        per_case=f"{RESULTS}/{{experiment}}/evaluate/per_case.parquet",
        summary=f"{RESULTS}/{{experiment}}/evaluate/summary.parquet",
    log:
        f"{RESULTS}/logs/{{experiment}}/evaluate.log",
    conda:
        "../../envs/evaluate.yaml"
    threads: 4
    params:
        evaluate=lambda wc: SETTINGS[wc.experiment]["evaluate"],
        split=lambda wc: SETTINGS[wc.experiment]["predict"]["split"],
    script:
        "../scripts/evaluate.py"
