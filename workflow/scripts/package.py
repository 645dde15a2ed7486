"""Rule package: the experiment's models and everything needed to apply them, in one portable file."""

import json

import pandas as pd

from unetflow.infer.package import build_package, save_package, training_palette, training_spacing
from unetflow.infer.predict import checkpoint_list
from unetflow.logs import stage_logger

log = stage_logger(snakemake.log[0])
checkpoints = checkpoint_list(snakemake.input.models)
splits = pd.read_parquet(snakemake.input.splits)
manifest = pd.read_parquet(snakemake.input.manifest)
trained = manifest[manifest["id"].isin(splits.loc[splits["split"] != "test", "id"])]
arrays = pd.read_parquet(snakemake.input.arrays)
with open(snakemake.input.settings) as file:
    settings = json.load(file)
package = build_package(checkpoints, snakemake.params.sources, trained,
                        arrays[arrays["id"].isin(trained["id"])], pd.read_parquet(snakemake.input.classes),
                        settings, snakemake.params.predict, snakemake.params.data["channels"]
                        is not None, snakemake.params.data["slice_axis"], training_palette(manifest),
                        training_spacing(trained))
save_package(package, snakemake.output[0])
log.info("packaged %d model(s) (%s) and %d classes into %s", len(checkpoints),
         ", ".join(f"{m['source']}: patch {m['patch_size']}" for m in package["models"]), len(package["classes"]),
         snakemake.output[0])
