rule split:
    input:
        manifest=rules.ingest.output.manifest,
    output:
        f"{RESULTS}/split/splits.parquet",
    log:
        f"{RESULTS}/logs/split.log",
    localrule: True
    conda:
        "../../envs/data.yaml"
    params:
        split=canonical(config["split"]),
    script:
        "../scripts/split.py"
