rule predict:
    input:
        models=ensemble_models,
        cases=rules.preprocess.output.cases,
        arrays=rules.preprocess.output.manifest,
        settings=rules.preprocess.output.settings,
        manifest=rules.ingest.output.manifest,
        classes=rules.ingest.output.classes,
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
        predict=lambda wc: predict_settings(wc.experiment),
        device=lambda wc: SETTINGS[wc.experiment]["predict"]["device"],
    script:
        "../scripts/predict.py"
