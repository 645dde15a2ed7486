rule train:
    input:
        arrays=rules.preprocess.output.arrays,
        stored=rules.preprocess.output.manifest,
        splits=rules.split.output[0],
        plan=rules.plan.output[0],
        regions=rules.ingest.output.regions,
        init=init_inputs,
        init_models=init_models,
    output:
        model=f"{RESULTS}/{{experiment}}/train/fold{{fold}}/model.pt",
        last=f"{RESULTS}/{{experiment}}/train/fold{{fold}}/last.pt",
        metrics=f"{RESULTS}/{{experiment}}/train/fold{{fold}}/metrics.parquet",
        tracking=f"{RESULTS}/{{experiment}}/train/fold{{fold}}/tracking.json",
    log:
        f"{RESULTS}/logs/{{experiment}}/train_fold{{fold}}.log",
    conda:
        "../../envs/torch.yaml"
    threads: 8
    resources:
        mem_mb=16000,
        runtime=720,
        gpu=lambda wc: uses_gpu(SETTINGS[wc.experiment]["train"]),
    params:
        train=lambda wc: SETTINGS[wc.experiment]["train"],
        state=lambda wc: f"{RESULTS}/{wc.experiment}/train/fold{wc.fold}/resume_state.pt",
    script:
        "../scripts/train.py"
