rule demo_data:
    output:
        directory(f"{RESULTS}/demo"),
    log:
        f"{RESULTS}/logs/demo_data.log",
    localrule: True
    conda:
        "../../envs/data.yaml"
    params:
        demo=canonical({**config["demo"], "instances": config["data"]["instances"]}),
    script:
        "../scripts/demo_data.py"
