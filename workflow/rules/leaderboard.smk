def leaderboard_runs():
    """Per experiment: its test summary, the metrics of its folds, and a checkpoint (to count parameters)."""
    return {
        name: dict(
            summary=expand(rules.evaluate.output.summary, experiment=name)[0],
            metrics=expand(rules.train.output.metrics, experiment=name, fold=FOLDS),
            model=expand(rules.train.output.model, experiment=name, fold=FOLDS[0])[0],
        )
        for name in EXPERIMENTS
    }


rule leaderboard:
    input:
        [path for run in leaderboard_runs().values() for path in (run["summary"], *run["metrics"], run["model"])],
    output:
        f"{RESULTS}/leaderboard.parquet",
    params:
        runs=leaderboard_runs(),
    log:
        f"{RESULTS}/logs/leaderboard.log",
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/leaderboard.py"
