# Rule plan: one training plan per experiment, run where its training runs (the same device and GPU request), so a
# plan made for a GPU is trained on one.


rule plan:
    input:
        stored=rules.preprocess.output.manifest,
        fingerprint=rules.fingerprint.output.summary,
        settings=rules.preprocess.output.settings,
        classes=rules.ingest.output.classes,
        regions=rules.ingest.output.regions,
        init=init_inputs,
        init_models=init_models,
        splits=rules.split.output[0],
    output:
        f"{RESULTS}/{{experiment}}/plan.json",
    log:
        f"{RESULTS}/logs/{{experiment}}/plan.log",
    conda:
        "../../envs/torch.yaml"
    threads: 8
    resources:
        gpu=lambda wc: uses_gpu(SETTINGS[wc.experiment]["train"]),
    params:
        train=lambda wc: {key: SETTINGS[wc.experiment]["train"][key] for key in PLAN_INPUTS},
    script:
        "../scripts/plan.py"
