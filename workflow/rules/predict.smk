rule predict:
    input:
        package=rules.package.output[0],
        manifest=rules.ingest.output.manifest,
        splits=rules.split.output[0],
    output:
        directory(f"{RESULTS}/{{experiment}}/predict/masks"),
    log:
        f"{RESULTS}/logs/{{experiment}}/predict.log",
    conda:
        "../../envs/torch.yaml"
    threads: 8
    resources:
        mem_mb=16000,
        runtime=240,
        gpu=lambda wc: uses_gpu(SETTINGS[wc.experiment]["predict"]),
    params:
        predict=lambda wc: SETTINGS[wc.experiment]["predict"],
    script:
        "../scripts/predict.py"
