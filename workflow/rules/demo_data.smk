rule demo_data:
    output:
        directory(f"{RESULTS}/demo"),
    params:
        demo=canonical(config["demo"]),
    log:
        f"{RESULTS}/logs/demo_data.log",
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/demo_data.py"
