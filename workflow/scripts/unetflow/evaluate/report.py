"""Report figures and tables: training curves, per-class metric distributions, example overlays, metric tables.

Every plot is a matplotlib Figure drawn on an Agg canvas (no pyplot state, no display needed) and written as PNG.
Foreground classes are the classes 1..K-1; a case's score is its mean foreground Dice.
"""

import itertools
import json
import re
import textwrap
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from scipy import ndimage

from unetflow.evaluate.object_metrics import HEADLINE_METRICS
from unetflow.instances.targets import instance_target, object_ids
from unetflow.io.labels import IGNORE_INDEX
from unetflow.io.prediction_files import prediction_path, read_class_mask, read_instance_mask
from unetflow.io.sources import read_source_image, read_source_mask, source_labels

DISTRIBUTION_METRICS = ("dice", "iou", "hd95")
METRIC_LABELS = {"dice": "Dice", "iou": "IoU", "hd95": "HD95 (spacing units)"}
CLASS_COLOURS = matplotlib.colormaps["tab10"].colors
DPI = 100
FOLD_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*")
JITTER = 0.08  # half-width of the horizontal scatter of the strip plot points
TITLE_FONT_SIZE = 10
MAX_TITLE_LINES = 4


def new_figure(columns: int, size: tuple[float, float], rows: int = 1) -> tuple[Figure, np.ndarray]:
    """A figure on an Agg canvas with rows x columns axes, each of `size` inches; a flat array of axes for one row."""
    figure = Figure(figsize=(size[0] * columns, size[1] * rows))
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    return figure, axes[0] if rows == 1 else axes


def save_figure(figure: Figure, path) -> Path:
    """Write the figure as PNG to `path`."""
    figure.savefig(path, dpi=DPI, bbox_inches="tight", format="png")
    return Path(path)


def plot_training_curves(metrics: pd.DataFrame, path) -> Path:
    """PNG of the training and validation loss (left) and the validation Dice (right) per epoch, one line style
    per fold when `metrics` has a `fold` column (as `fold_metrics` returns)."""
    figure, (losses, dice) = new_figure(2, (5, 4))
    folds = metrics.groupby("fold", sort=True) if "fold" in metrics else [(None, metrics)]
    for (fold, rows), marker in zip(folds, itertools.cycle(FOLD_MARKERS)):
        suffix = "" if fold is None else f", fold {fold}"
        losses.plot(rows["epoch"], rows["train_loss"], marker=marker, color="tab:blue", label=f"training{suffix}")
        validated = rows.dropna(subset=["val_dice"])  # epochs between validations of a large validation set
        losses.plot(validated["epoch"], validated["val_loss"], marker=marker, color="tab:orange",
                    label=f"validation{suffix}")
        dice.plot(validated["epoch"], validated["val_dice"], marker=marker, color="tab:green",
                  label=f"validation{suffix}")
    losses.set(xlabel="epoch", ylabel="loss", title="Loss")
    dice.set(xlabel="epoch", ylabel="Dice", title="Validation foreground Dice", ylim=(0, 1.02))
    for axes in (losses, dice):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    return save_figure(figure, path)


def fold_metrics(paths: list[str]) -> pd.DataFrame:
    """The training metrics of several folds in one table, with a `fold` column: the number in the name of each
    file's folder (train/fold<N>/metrics.parquet), else its position in `paths`."""
    tables = []
    for position, path in enumerate(paths):
        match = re.fullmatch(r"fold(\d+)", Path(path).parent.name)
        tables.append(pd.read_parquet(path).assign(fold=int(match.group(1)) if match else position))
    return pd.concat(tables, ignore_index=True)


def plan_title(experiment: str, trained_by: str) -> str:
    """The heading of an experiment's plan table: whose plan and models it is when another experiment trained them."""
    return "Training plan" if trained_by == experiment else \
        f"Training plan and models of experiment {trained_by} (the same train section), which {experiment} uses"


def plan_table(path) -> pd.DataFrame:
    """An experiment's training plan (plan.json) as a table: setting, value, source (planned or config) and reason,
    the image scale of 2D files, then the traits it was planned from and the device it was planned for."""
    plan = json.loads(Path(path).read_text())
    rows = [dict(setting=key, value=str(entry["value"]), source=entry["source"], reason=entry["reason"])
            for key, entry in plan["settings"].items()]
    if scale := plan.get("image_scale"):  # not in plans of volumes, nor in earlier ones
        rows.append(dict(setting="(image scale)", value=str(scale["value"]), source="preprocess and plan",
                         reason=f"what the network sees of a 2D file: {scale['reason']}"))
    rows.append(dict(setting="(traits)", value=json.dumps(plan["traits"]), source="training sources",
                     reason="what the plan was made from"))
    rows.append(dict(setting="(device)", value=json.dumps(plan["device"]), source="plan job",
                     reason="the device the plan was made for"))
    return pd.DataFrame(rows)


def foreground(per_case: pd.DataFrame) -> pd.DataFrame:
    """The rows of the foreground classes (class > 0)."""
    return per_case[per_case["class"] > 0]


def plot_metric_distributions(per_case: pd.DataFrame, path, metrics=DISTRIBUTION_METRICS, seed: int = 0) -> Path:
    """PNG with one panel per metric: a box plot per foreground class with every case drawn as a point over it."""
    rows = foreground(per_case)
    names = rows.drop_duplicates("class").sort_values("class")["class_name"].tolist()
    rng = np.random.default_rng(seed)
    figure, panels = new_figure(len(metrics), (4, 4))
    for axes, metric in zip(panels, metrics):
        values = [rows.loc[rows["class_name"] == name, metric].to_numpy() for name in names]
        axes.boxplot(values, tick_labels=names, showfliers=False)
        for position, class_values in enumerate(values, start=1):
            offsets = rng.uniform(-JITTER, JITTER, len(class_values))
            axes.scatter(position + offsets, class_values, s=12, alpha=0.6, color="tab:blue", zorder=3)
        axes.set(title=METRIC_LABELS.get(metric, metric), xlabel="class")
        axes.grid(axis="y", alpha=0.3)
    return save_figure(figure, path)


def case_scores(per_case: pd.DataFrame) -> pd.Series:
    """Mean foreground Dice per case id (in the instance mode the object mAP, named `object_map`), highest first
    (ties by id)."""
    metric, name = ("object_map", "object_map") if "object_map" in per_case else ("dice", "mean_foreground_dice")
    scores = foreground(per_case).groupby("id")[metric].mean().rename(name)
    return scores.sort_index().sort_values(ascending=False, kind="stable")


def example_cases(per_case: pd.DataFrame) -> dict[str, str]:
    """Ids of the best, median and worst case by `case_scores` (the median is the middle of the ranking, the better
    one of the two middle cases for an even count)."""
    ranked = case_scores(per_case).index
    return {"best": ranked[0], "median": ranked[(len(ranked) - 1) // 2], "worst": ranked[-1]}


def load_overlay_unit(row: dict, unit: slice, pred_dir, classes: pd.DataFrame) -> dict:
    """The image (Y, X, C), ground truth and prediction (Y, X) of a unit (a 2D file, a stack page, a volume) on its
    file's grid, as class indices, or object ids in the instance mode; of a volume, its slice with the most
    ground-truth foreground."""
    image = read_source_image(row)[:, unit]
    if instance_target(classes):  # object ids instead of classes, outlined one colour per object
        gt = object_ids(read_source_mask(row, ids=True)[unit])
        pred = read_instance_mask(prediction_path(pred_dir, row["id"], row, instances=True), row)[unit]
    else:
        gt = source_labels(row, classes)[0][unit]
        pred = read_class_mask(prediction_path(pred_dir, row["id"], row), classes, row)[unit]
    index = int(np.argmax([((plane > 0) & (plane != IGNORE_INDEX)).sum() for plane in gt]))
    return dict(image=np.moveaxis(image[:, index], 0, -1), gt=gt[index], pred=pred[index])


def display_image(image: np.ndarray) -> np.ndarray:
    """(H, W, C) image scaled to [0, 1] between its 1st and 99th percentiles; (H, W) for one channel, and of an image
    of other than 3 channels (a volume's modalities) its first."""
    pixels = image.astype(np.float32)[..., :1] if image.shape[-1] != 3 else image.astype(np.float32)
    low, high = np.percentile(pixels, (1, 99))
    scaled = np.clip((pixels - low) / max(high - low, 1e-8), 0, 1)
    return scaled[..., 0] if scaled.shape[-1] == 1 else scaled


def draw_contours(axes: Axes, labels: np.ndarray, num_classes: int) -> None:
    """Outline each foreground class of `labels` in its class colour (a class absent or everywhere has no outline,
    nor has an image less than 2 pixels wide or high)."""
    if min(labels.shape) < 2:
        return
    for c in range(1, num_classes):
        mask = labels == c
        if mask.any() and not mask.all():
            axes.contour(mask, levels=[0.5], colors=[class_colour(c)], linewidths=1.2)


def draw_instance_outlines(axes: Axes, ids: np.ndarray) -> None:
    """Outline every object of an id map in a colour of its own (20 colours, cycled by id)."""
    outlines = ids * (ids != ndimage.grey_erosion(ids, size=3)) if ids.any() else ids
    colours = np.zeros((*ids.shape, 4))
    palette = np.array(matplotlib.colormaps["tab20"].colors)
    colours[outlines > 0, :3] = palette[(outlines[outlines > 0].astype(np.int64) - 1) % len(palette)]
    colours[outlines > 0, 3] = 1
    axes.imshow(colours, interpolation="nearest")


def class_colour(c: int) -> tuple:
    """The colour of foreground class c (1, 2, ...)."""
    return CLASS_COLOURS[(c - 1) % len(CLASS_COLOURS)]


def plot_overlays(panels: list[dict], class_names: list[str], path, instances: bool = False) -> Path:
    """PNG of `overlay_figure`."""
    return save_figure(overlay_figure(panels, class_names, instances), path)


def overlay_figure(panels: list[dict], class_names: list[str], instances: bool = False) -> Figure:
    """One column per case: the image with the ground-truth contours (top row) and with the predicted contours
    (bottom row), one colour per foreground class. Each panel dict holds title, image, gt and pred (as
    `load_overlay_unit` returns them, plus a title); titles are wrapped to their panel's width (long case ids).
    With `instances` gt and pred are id maps, each object outlined in a colour of its own."""
    figure, grid = new_figure(len(panels), (3.6, 3.6), rows=2)
    for column, panel in enumerate(panels):
        image = display_image(panel["image"])
        for row, (key, kind) in enumerate((("gt", "ground truth"), ("pred", "prediction"))):
            axes = grid[row, column]
            axes.imshow(image, cmap="gray", interpolation="nearest")
            if instances:
                draw_instance_outlines(axes, panel[key])
            else:
                draw_contours(axes, panel[key], len(class_names))
            axes.set_xticks([])
            axes.set_yticks([])
            if row:
                axes.set_title(kind, fontsize=TITLE_FONT_SIZE)
            else:
                set_wrapped_title(axes, panel["title"], kind)
    legend = [Line2D([], [], color="tab:blue", label="one colour per object")] if instances else \
        overlay_legend(class_names)
    figure.legend(handles=legend, loc="lower center", ncol=max(1, len(legend)), frameon=False)
    figure.subplots_adjust(bottom=0.08)
    return figure


def set_wrapped_title(axes: Axes, text: str, last_line: str) -> None:
    """Title `text` + `last_line` in lines no wider than the axes as rendered: words longer than a line (long case
    ids) are broken; past MAX_TITLE_LINES lines the text ends with an ellipsis."""
    renderer = axes.figure.canvas.get_renderer()
    width = axes.get_window_extent(renderer).width
    for chars in range(max(len(text), 8), 3, -1):
        lines = textwrap.wrap(text, chars, break_on_hyphens=False)
        if len(lines) > MAX_TITLE_LINES:
            lines = [*lines[:MAX_TITLE_LINES - 1], lines[MAX_TITLE_LINES - 1][:chars - 1] + "…"]
        axes.set_title("\n".join([*lines, last_line]), fontsize=TITLE_FONT_SIZE)
        if axes.title.get_window_extent(renderer).width <= width:
            return


def overlay_legend(class_names: list[str]) -> list[Line2D]:
    """Legend entries: the colour of each foreground class."""
    return [Line2D([], [], color=class_colour(c), label=name) for c, name in enumerate(class_names) if c > 0]


def per_case_table(per_case: pd.DataFrame, metrics=DISTRIBUTION_METRICS) -> pd.DataFrame:
    """One row per case, best first: id, mean_foreground_dice, then one column per metric and foreground class
    named '<metric> (<class name>)'."""
    metrics = [*metrics, *(m for m in HEADLINE_METRICS if m in per_case)]
    wide = foreground(per_case).pivot(index="id", columns="class_name", values=metrics)
    wide.columns = [f"{metric} ({name})" for metric, name in wide.columns]
    return case_scores(per_case).to_frame().join(wide).reset_index()


def summary_table(summary: pd.DataFrame, metrics=DISTRIBUTION_METRICS) -> pd.DataFrame:
    """class_name, n_cases, empty_false_positives and the mean, median and std of each metric, one row per class."""
    metrics = [*metrics, *(m for m in HEADLINE_METRICS if f"{m}_mean" in summary)]
    stats = [f"{metric}_{stat}" for metric in metrics for stat in ("mean", "median", "std")]
    return summary[["class_name", "n_cases", "empty_false_positives", *stats]]
