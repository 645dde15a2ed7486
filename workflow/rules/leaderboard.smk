rule leaderboard:
    input:
        [path for run in leaderboard_runs().values() for path in (run["summary"], *run["metrics"], *run["plans"])],
    output:
        table=f"{RESULTS}/leaderboard.parquet",
        html=report(
            f"{RESULTS}/leaderboard.html",
            caption="../report/leaderboard.rst",
            category="leaderboard",
            labels={"table": "experiments compared"},
        ),
    log:
        f"{RESULTS}/logs/leaderboard.log",
    localrule: True
    conda:
        "../../envs/data.yaml"
    params:
        runs=canonical(leaderboard_runs()),
    script:
        "../scripts/leaderboard.py"
