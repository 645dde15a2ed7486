# Rule package: the experiment's models and all it takes to apply them, in one file. An instance package also chooses
# its object probability on the validation images, predicting them, so it runs where predict runs.


rule package:
    input:
        models=ensemble_models,
        plan=trained_plan,
        manifest=rules.ingest.output.manifest,
        classes=rules.ingest.output.classes,
        regions=rules.ingest.output.regions,
        stored=rules.preprocess.output.manifest,
        settings=rules.preprocess.output.settings,
        fingerprint=rules.fingerprint.output.summary,
        splits=rules.split.output[0],
        tracking=own_tracking,
    output:
        f"{RESULTS}/{{experiment}}/package/{{experiment}}.pt",
    log:
        f"{RESULTS}/logs/{{experiment}}/package.log",
    conda:
        "../../envs/torch.yaml"
    threads: 8
    resources:
        gpu=lambda wc: (uses_gpu(SETTINGS[wc.experiment]["predict"]) if config["data"]["instances"] else 0),
    params:
        sources=lambda wc: [f"{member}/fold{fold}" for member, fold in ensemble_members(wc.experiment)],
        predict=lambda wc: {key: SETTINGS[wc.experiment]["predict"][key] for key in (*PACKAGED_PREDICT_KEYS, "device")},
        data=canonical({key: config["data"][key] for key in ("channels", "slice_axis")}),
        sharing=sharing_note,
    script:
        "../scripts/package.py"
