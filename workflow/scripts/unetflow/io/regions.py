"""Regions: nested classes trained as overlapping regions (`data.regions`, nnU-Net's region-based training, as for
BraTS: whole tumour ⊃ tumour core ⊃ enhancing tumour).

A region is a set of classes; a region model has one output per region, a sigmoid each. Its targets come from the
stored class indices through a lookup table (class index -> membership of each region). Predicted regions are
written back as class labels nnU-Net's way: every pixel starts as background and each region, in order, sets its
pixels to its label (its one class in no later region; `unetflow.config.region_labels`), later regions overwriting
earlier ones. Stored as the region table (ingest's `data/regions.parquet`, in model packages as records): one row
per region in its order (the index of its network output): index, name, values (its mask values), classes (their
class indices), label (the class index it is written as) and value (the mask value it is written as).
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from unetflow.config import region_labels
from unetflow.io.labels import IGNORE_INDEX, class_values

REGION_COLUMNS = ("index", "name", "values", "classes", "label", "value")


def region_table(regions: dict | None, classes: pd.DataFrame) -> pd.DataFrame:
    """The region table of data.regions (checked by `unetflow.config.region_problems` against the class table
    `classes`); no rows without regions."""
    if not regions:
        return pd.DataFrame({column: [] for column in REGION_COLUMNS})
    index_of = {value: index for index, value in enumerate(class_values(classes))}
    written = region_labels(regions)
    return pd.DataFrame([dict(index=number, name=name, values=list(values),
                              classes=[index_of[value] for value in values], label=index_of[written[name][0]],
                              value=written[name][0])
                         for number, (name, values) in enumerate(regions.items())])


@dataclass(frozen=True)
class Regions:
    """The regions a region model predicts, in the order of its outputs: their names, the class indices each holds,
    and the class index each is written as."""
    names: tuple[str, ...]
    classes: tuple[tuple[int, ...], ...]
    labels: tuple[int, ...]

    @classmethod
    def of(cls, table: pd.DataFrame) -> "Regions | None":
        """The regions of a region table, or None for a table without rows (a model of classes)."""
        if not len(table):
            return None
        rows = table.sort_values("index")
        return cls(tuple(rows["name"]), tuple(tuple(int(c) for c in members) for members in rows["classes"]),
                   tuple(int(label) for label in rows["label"]))

    def lookup(self) -> np.ndarray:
        """(256, R) bool: whether each class index (uint8) lies in each region; IGNORE_INDEX lies in none."""
        table = np.zeros((IGNORE_INDEX + 1, len(self.names)), bool)
        for region, members in enumerate(self.classes):
            table[list(members), region] = True
        return table

    def masks(self, labels: np.ndarray) -> np.ndarray:
        """The region masks (R, ...) bool of class indices (...)."""
        return np.moveaxis(self.lookup()[labels], -1, 0)

    def labels_of(self, masks: np.ndarray) -> np.ndarray:
        """Class indices (...) uint8 of region masks (R, ...): background, then each region in order sets its pixels
        to its label, later regions overwriting earlier ones."""
        labels = np.zeros(masks.shape[1:], np.uint8)
        for mask, label in zip(masks, self.labels):
            labels[mask] = label
        return labels
