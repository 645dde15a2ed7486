rule preprocess:
    input:
        manifest=rules.ingest.output.manifest,
        classes=rules.ingest.output.classes,
        fingerprint=rules.fingerprint.output.summary,
    output:
        arrays=directory(f"{RESULTS}/preprocess/arrays"),
        manifest=f"{RESULTS}/preprocess/manifest.parquet",
        settings=f"{RESULTS}/preprocess/settings.json",
    log:
        f"{RESULTS}/logs/preprocess.log",
    conda:
        "../../envs/data.yaml"
    threads: 4
    params:
        preprocess=canonical(preprocess_params()),
    script:
        "../scripts/preprocess.py"
