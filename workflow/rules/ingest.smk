rule ingest:
    input:
        data_inputs(),
    output:
        manifest=f"{RESULTS}/data/manifest.parquet",
        classes=f"{RESULTS}/data/classes.parquet",
        warnings=f"{RESULTS}/data/warnings.parquet",
        regions=f"{RESULTS}/data/regions.parquet",
        annotated=directory(f"{RESULTS}/data/annotated"),
    log:
        f"{RESULTS}/logs/ingest.log",
    conda:
        "../../envs/data.yaml"
    threads: 4
    params:
        data=canonical(data_location()),
    script:
        "../scripts/ingest.py"
