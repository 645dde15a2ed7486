rule preprocess:
    input:
        manifest=rules.ingest.output.manifest,
        classes=rules.ingest.output.classes,
    output:
        cases=directory(f"{RESULTS}/preprocess/cases"),
        manifest=f"{RESULTS}/preprocess/manifest.parquet",
    params:
        preprocess=canonical(config["preprocess"]),
    threads: 4
    log:
        f"{RESULTS}/logs/preprocess.log",
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/preprocess.py"
