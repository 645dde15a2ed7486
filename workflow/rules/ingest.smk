rule ingest:
    input:
        data_inputs(),
    output:
        manifest=f"{RESULTS}/data/manifest.parquet",
        classes=f"{RESULTS}/data/classes.parquet",
    params:
        data=canonical(data_location()),
    threads: 4
    log:
        f"{RESULTS}/logs/ingest.log",
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/ingest.py"
