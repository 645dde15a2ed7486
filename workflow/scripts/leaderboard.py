"""Rule leaderboard: compare every experiment on the same test cases."""

from unetflow.evaluate.html_tables import write_html_tables
from unetflow.evaluate.leaderboard import empty_case_notes, leaderboard
from unetflow.logs import stage_logger

log = stage_logger(snakemake.log[0])
table = leaderboard(snakemake.params.runs)
table.to_parquet(snakemake.output.table)
write_html_tables([("Experiments on the same test cases, best first", table)], snakemake.output.html)
log.info("leaderboard:\n%s", table.to_string(index=False, float_format="%.4f"))
for note in empty_case_notes(table):
    log.warning(note)
