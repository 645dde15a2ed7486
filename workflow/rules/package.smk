rule package:
    input:
        models=ensemble_models,
        plan=rules.plan.output[0],
        manifest=rules.ingest.output.manifest,
        classes=rules.ingest.output.classes,
        regions=rules.ingest.output.regions,
        stored=rules.preprocess.output.manifest,
        settings=rules.preprocess.output.settings,
        splits=rules.split.output[0],
        tracking=lambda wc: expand(rules.train.output.tracking, experiment=wc.experiment, fold=FOLDS),
    output:
        f"{RESULTS}/{{experiment}}/package/{{experiment}}.pt",
    log:
        f"{RESULTS}/logs/{{experiment}}/package.log",
    conda:
        "../../envs/torch.yaml"
    params:
        sources=lambda wc: [f"{member}/fold{fold}" for member, fold in ensemble_members(wc.experiment)],
        predict=lambda wc: {key: SETTINGS[wc.experiment]["predict"][key] for key in PACKAGED_PREDICT_KEYS},
        data=canonical({key: config["data"][key] for key in ("channels", "slice_axis")}),
    script:
        "../scripts/package.py"
