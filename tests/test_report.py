"""Report: figures from small synthetic tables, example selection, tables, and `snakemake --report` end to end."""

import json
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from unetflow.evaluate.evaluate import summarize
from unetflow.evaluate.html_tables import write_html_tables
from unetflow.evaluate.report import (
    case_scores,
    example_cases,
    fold_metrics,
    overlay_figure,
    per_case_table,
    plan_title,
    plot_metric_distributions,
    plot_overlays,
    plot_training_curves,
    summary_table,
)

CLASS_NAMES = ["background", "cell", "nucleus"]
FOREGROUND_DICE = {"c0": (0.9, 0.7), "c1": (0.2, 0.4), "c2": (0.6, 0.6), "c3": (1.0, 0.9), "c4": (0.5, 0.3)}


@pytest.fixture
def per_case() -> pd.DataFrame:
    """Five cases with three classes; the foreground Dice of each case is FOREGROUND_DICE."""
    rows = []
    for case_id, (cell, nucleus) in FOREGROUND_DICE.items():
        for c, dice in enumerate((0.99, cell, nucleus)):
            rows.append(dict(id=case_id, **{"class": c}, class_name=CLASS_NAMES[c], dice=dice, iou=dice / (2 - dice),
                             hd95=10 * (1 - dice), tp=int(100 * dice), roi=False, gt_empty=False, pred_empty=False))
    return pd.DataFrame(rows)


TAB = {"blue": (31, 119, 180), "orange": (255, 127, 14), "green": (44, 160, 44)}  # matplotlib's tab10 colours


def assert_png(path, colours=()) -> None:
    """A readable PNG larger than 50x50 in which each named tab10 colour covers at least 20 pixels (the lines,
    points or contours drawn in it: a blank or an unplotted figure fails)."""
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] > 50 and image.shape[1] > 50
    rgb = image[..., ::-1].astype(int)
    for name in colours:
        close = (np.abs(rgb - TAB[name]).max(axis=-1) <= 8).sum()
        assert close >= 20, f"{path}: {close} pixels in {name}"


def epoch_metrics(epochs: int, scale: float = 1.0) -> pd.DataFrame:
    epoch = np.arange(1, epochs + 1)
    return pd.DataFrame({"epoch": epoch, "train_loss": scale / epoch, "val_loss": 1.2 * scale / epoch,
                         "val_dice": 1 - 1 / (epoch + 1)})


def test_training_curves_png(tmp_path):
    assert_png(plot_training_curves(epoch_metrics(5), tmp_path / "curves.png"), ("blue", "orange", "green"))


def test_training_curves_of_several_folds(tmp_path):
    paths = []
    for fold, epochs in ((0, 4), (1, 6)):
        (tmp_path / f"fold{fold}").mkdir()
        paths.append(tmp_path / f"fold{fold}" / "metrics.parquet")
        epoch_metrics(epochs, scale=fold + 1).to_parquet(paths[-1])
    metrics = fold_metrics(paths)
    assert metrics.groupby("fold").size().to_dict() == {0: 4, 1: 6}
    assert_png(plot_training_curves(metrics, tmp_path / "curves.png"), ("blue", "orange", "green"))


def test_metric_distributions_png(tmp_path, per_case):
    assert_png(plot_metric_distributions(per_case, tmp_path / "distributions.png"), ("orange",))  # box medians


def test_overlays_png(tmp_path):
    rng = np.random.default_rng(0)
    gt = np.zeros((32, 32), np.uint8)
    gt[4:14, 4:14], gt[20:28, 18:30] = 1, 2
    panels = [dict(title=title, image=rng.integers(0, 256, (32, 32, 1), dtype=np.uint8), gt=gt,
                   pred=np.roll(gt, shift, axis=1)) for title, shift in (("best", 0), ("median", 2), ("worst", 9))]
    assert_png(plot_overlays(panels, CLASS_NAMES, tmp_path / "overlays.png"), ("blue", "orange"))
    without_classes = [dict(panel, gt=np.zeros_like(gt), pred=np.zeros_like(gt)) for panel in panels]
    with pytest.raises(AssertionError, match="pixels in orange"):  # the check sees missing contours
        assert_png(plot_overlays(without_classes, CLASS_NAMES[:2], tmp_path / "empty.png"), ("blue", "orange"))


@pytest.mark.parametrize("case_id", ["kvasir_cju0qkwl35piu0993l0dewei2",  # 31 characters, as in endoscopy sets
                                     "a" * 140, "patient 0001 visit 02 slice 0153 of the long study"])
def test_overlay_titles_of_long_case_ids_do_not_overlap(case_id):
    gt = np.zeros((32, 32), np.uint8)
    gt[4:14, 4:14] = 1
    panels = [dict(title=f"{kind}, Dice 0.912: {case_id}{kind}", image=np.zeros((32, 32, 1), np.uint8), gt=gt,
                   pred=gt) for kind in ("best", "median", "worst")]
    figure = overlay_figure(panels, CLASS_NAMES[:2])
    renderer = figure.canvas.get_renderer()
    figure.canvas.draw()
    boxes = [axes.title.get_window_extent(renderer) for axes in figure.axes]
    assert all(not a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    figure_box = figure.bbox
    assert all(figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1 for box in boxes)  # none cut off at the sides
    assert "0.912" in figure.axes[0].get_title()  # the score survives the shortening


def test_examples_are_best_median_and_worst_by_mean_foreground_dice(per_case):
    scores = case_scores(per_case)
    assert scores.index.tolist() == ["c3", "c0", "c2", "c4", "c1"]
    assert scores["c0"] == pytest.approx(0.8)
    assert example_cases(per_case) == {"best": "c3", "median": "c2", "worst": "c1"}


def test_instance_examples_are_chosen_by_object_map_not_by_pixel_dice(per_case):
    objects = per_case.assign(object_map=np.where(per_case["class"] > 0, 1 - per_case["dice"], np.nan))
    scores = case_scores(objects)  # two touching nuclei merged: a high pixel Dice, a low object mAP
    assert scores.name == "object_map" and scores.index.tolist() == ["c1", "c4", "c2", "c0", "c3"]
    assert example_cases(objects) == {"best": "c1", "median": "c2", "worst": "c3"}


def test_per_case_table_has_a_column_per_metric_and_foreground_class(per_case):
    table = per_case_table(per_case)
    assert table["id"].tolist() == ["c3", "c0", "c2", "c4", "c1"]
    assert "dice (background)" not in table and table.loc[0, "dice (nucleus)"] == pytest.approx(0.9)
    assert {"mean_foreground_dice", "iou (cell)", "hd95 (nucleus)"} <= set(table.columns)


def test_the_plan_table_of_an_experiment_using_anothers_models_says_whose_they_are():
    assert plan_title("unet", "unet") == "Training plan"
    assert plan_title("largest", "unet") == ("Training plan and models of experiment unet (the same train section), "
                                             "which largest uses")


def test_html_tables_are_standalone(tmp_path, per_case):
    path = write_html_tables([("Summary", summary_table(summarize(per_case))), ("Per case", per_case_table(per_case))],
                             tmp_path / "tables.html")
    html = path.read_text()
    assert html.count("<table") == 2 and "c4" in html and "http" not in html


def external_asset_links(html: str) -> list[str]:
    """src/href attributes that load a script, stylesheet, image or frame from the network."""
    tags = re.findall(r"<(?:script|link|img|iframe)\b[^>]*>", html, flags=re.IGNORECASE)
    return [tag for tag in tags if re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", tag)]


def snakefile_with_report(folder) -> str:
    """A copy of the Snakefile with absolute paths that includes the report rules (unless it already does)."""
    text = (REPO / "Snakefile").read_text()
    text = text.replace('configfile: "config/', f'configfile: "{REPO}/config/')
    text = text.replace('include: "workflow/', f'include: "{REPO}/workflow/')
    evaluate_rules = f'include: "{REPO}/workflow/rules/evaluate.smk"'
    if "rules/report.smk" not in text:
        text = text.replace(evaluate_rules, f'{evaluate_rules}\ninclude: "{REPO}/workflow/rules/report.smk"')
    path = folder / "Snakefile"
    path.write_text(text)
    return str(path)


def test_snakemake_report_is_self_contained(tiny_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    snakefile = snakefile_with_report(tmp_path)
    targets = [f"results/unet/report/{name}" for name in
               ("training_curves.png", "metric_distributions.png", "overlays.png", "metrics.html")]
    base = [sys.executable, "-m", "snakemake", "-s", snakefile, "--directory", str(workdir),
            "--configfile", str(REPO / "tests" / "tiny.yaml"), "--cores", "2"]
    for extra in ([], ["--report", str(workdir / "report.html")]):
        result = subprocess.run(base + extra + targets, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr[-4000:]
    for target in targets[:3]:
        assert_png(workdir / target)
    html = (workdir / "report.html").read_text()
    assert len(html) > 10_000 and "overlays.png" in html and "best, median and worst case" in html
    assert external_asset_links(html) == []
    tables = (workdir / "results/unet/report/metrics.html").read_text()
    plan = json.loads((workdir / "results/unet/plan.json").read_text())
    assert "(image scale)" in tables and plan["image_scale"]["value"] == plan["settings"]["resolution"]["value"]
