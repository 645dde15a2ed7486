"""The `dataset.json` beside the images and labels folders of a data set laid out as nnU-Net's raw data
(imagesTr/, labelsTr/) or the Medical Segmentation Decathlon's: the class names of its label values, taken as the
classes when `data.classes` is not set."""

import json
import logging

from unetflow.data.pairing import dataset_json

log = logging.getLogger("unetflow.data.dataset_json")


def label_names(labels) -> dict[str, int] | None:
    """{class name: label value} of a dataset.json's `labels`: nnU-Net v2's {name: value}, or the Decathlon's
    {"value": name}; None for anything else (nnU-Net's region labels, lists of values, among them)."""
    if not isinstance(labels, dict) or not labels:
        return None
    if all(isinstance(value, int) and not isinstance(value, bool) for value in labels.values()):
        return {str(name): value for name, value in labels.items()}
    if all(str(key).isdigit() and isinstance(name, str) for key, name in labels.items()):
        return {name: int(key) for key, name in labels.items()}
    return None


def dataset_json_classes(masks: str | None) -> dict[str, int] | None:
    """The classes a data set's dataset.json names (`unetflow.data.pairing.dataset_json`, `label_names`), logged;
    None without a usable one."""
    path = dataset_json(masks)
    if path is None:
        return None
    try:
        labels = json.loads(path.read_text()).get("labels")
        classes = label_names(labels)
    except (OSError, ValueError, AttributeError):
        labels = classes = None
    if classes is None or len(set(classes.values())) < len(classes):
        log.info("%s: its labels are not a name for each label value; classes taken from the masks%s", path,
                 regions_hint(labels))
        return None
    log.info("classes from %s: %s (data.classes overrides it)", path, classes)
    return classes


def regions_hint(labels) -> str:
    """For nnU-Net's region labels ({name: [values]}): the data.regions that trains them so; else ''."""
    if not isinstance(labels, dict) or not any(isinstance(value, list) for value in labels.values()):
        return ""
    regions = {name: value if isinstance(value, list) else [value] for name, value in labels.items()
               if value not in (0, [0])}
    shown = ", ".join(f"{name}: {values}" for name, values in regions.items())
    return f"; its labels are nnU-Net regions: to train them so, set data.regions: {{{shown}}}"
