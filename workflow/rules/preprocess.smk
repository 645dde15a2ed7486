rule preprocess:
    input:
        manifest=rules.ingest.output.manifest,
        classes=rules.ingest.output.classes,
    output:
        cases=directory(f"{RESULTS}/preprocess/cases"),
        manifest=f"{RESULTS}/preprocess/manifest.parquet",
    log:
        f"{RESULTS}/logs/preprocess.log",
    conda:
        "../../envs/data.yaml"
    threads: 4
    params:
        preprocess=canonical(config["preprocess"]),
    script:
        "../scripts/preprocess.py"
