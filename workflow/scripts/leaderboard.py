"""Rule leaderboard: compare every experiment on the same test cases."""

from unetflow.leaderboard import leaderboard
from unetflow.logs import stage_logger

log = stage_logger(snakemake.log[0])
table = leaderboard(snakemake.params.runs)
table.to_parquet(snakemake.output[0])
log.info("leaderboard:\n%s", table.to_string(index=False, float_format="%.4f"))
