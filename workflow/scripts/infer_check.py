"""Rule infer_check: read every image to segment in full (a whole-slide image: open it and choose its level) and check
it against the model, before any prediction (and refuse images of another folder that would replace masks of an
earlier run's images of the same names); whole-slide images are no shard's (`shard` empty)."""

import json
import re
from pathlib import Path

from unetflow.data.pairing import buried_series, input_root, subfolder_note, unread_images_note
from unetflow.infer.infer import InferInputError, check_images, input_notes
from unetflow.infer.ledger import overwrite_problems, record_claims
from unetflow.infer.package import load_package
from unetflow.logs import stage_logger
from unetflow.threads import job_threads

log = stage_logger(snakemake.log[0])
shard_of = {path: int(re.search(r"shard(\d+)\.json$", listed).group(1))
            for listed in snakemake.input.lists for path in json.loads(Path(listed).read_text())["files"]}
slides = [path for listed in snakemake.input.slides for path in json.loads(Path(listed).read_text())["files"]]
spec = snakemake.params.spec
package = load_package(snakemake.input.package)
table = check_images([*shard_of, *slides], package, job_threads(snakemake.threads), f"infer.images = '{spec}'",
                     input_root(spec), snakemake.params.slide_pixel_size, snakemake.params.rois)
table["shard"] = table["image_path"].map(shard_of).astype("Int64")
out_dir = Path(snakemake.output[0]).parent
if problems := overwrite_problems(table, out_dir):
    raise InferInputError(f"{len(problems)} image(s) would replace the masks of others:\n  - "
                          + "\n  - ".join(problems))
record_claims(table, out_dir)
table.to_parquet(snakemake.output[0])
log.info("%d image source(s) checked (%s) in %d shard(s); masks are laid out as below %s", len(table),
         table["kind"].value_counts().to_dict(), table["shard"].nunique(), input_root(spec))
for note in [subfolder_note(spec), unread_images_note(spec, "infer.images"), *buried_series(spec, "infer.images")]:
    if note:
        log.warning(note)
for note in input_notes(table, package, snakemake.params.slide_pixel_size, snakemake.params.rois):
    log.warning(note)
