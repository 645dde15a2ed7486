rule fingerprint:
    input:
        manifest=rules.ingest.output.manifest,
        classes=rules.ingest.output.classes,
        splits=rules.split.output[0],
    output:
        table=f"{RESULTS}/data/fingerprint.parquet",
        summary=f"{RESULTS}/data/fingerprint.json",
    log:
        f"{RESULTS}/logs/fingerprint.log",
    conda:
        "../../envs/data.yaml"
    threads: 4
    script:
        "../scripts/fingerprint.py"
