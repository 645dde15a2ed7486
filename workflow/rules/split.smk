rule split:
    input:
        manifest=rules.ingest.output.manifest,
    output:
        f"{RESULTS}/split/splits.parquet",
    params:
        split=canonical(config["split"]),
    log:
        f"{RESULTS}/logs/split.log",
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/split.py"
