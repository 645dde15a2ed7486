"""The instance mode's two targets vs plain semantic segmentation + connected components, on generated touching cells.

All three train the same U-Net with the same budget (epochs x iterations, batch, seed) on the same images: the
instance mode's `weight_map` target (binary foreground, touching objects separated, the U-Net paper's border weights
on the cross-entropy; watershed from the foreground core) and its `three_class` target (background / interior /
boundary, watershed from the interior), and the baseline on binary foreground with 8-connected components. The
instance targets' object probability is chosen on the validation images, as a package chooses it. Prints per target:
object F1 at IoU 0.5, mAP (0.5:0.9), AJI, PQ (means over the test images), the object probability and the training
minutes.

    python bench/instances.py                      # 48 images of 128x128, 10 epochs x 25 iterations
    python bench/instances.py --count 12 --epochs 1 --iterations 2   # smoke
    python bench/instances.py --targets weight_map --threads 1        # one target (run targets in parallel)
"""

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plan_cases import planned_config, train_defaults  # noqa: E402

from unetflow.data.demo_cells import render_touching_cells  # noqa: E402
from unetflow.data.normalization import normalize  # noqa: E402
from unetflow.evaluate.object_metrics import object_metrics  # noqa: E402
from unetflow.infer.object_probability import chosen_object_probability, object_probability_scores  # noqa: E402
from unetflow.infer.predictor import model_probabilities  # noqa: E402
from unetflow.instances.objects import (  # noqa: E402
    OBJECT_PROBABILITY,
    instances_from_foreground,
    instances_from_probabilities,
)
from unetflow.instances.targets import touching_pairs, training_target  # noqa: E402
from unetflow.train.augment import AUGMENT_DEFAULTS  # noqa: E402
from unetflow.train.train import Trainer  # noqa: E402

TARGETS = {  # name: (id map -> (labels, weights or None), classes, instance target or None: connected components)
    "weight_map (instance mode)": (lambda ids: training_target(ids, "weight_map"), 2, "weight_map"),
    "three_class (instance mode)": (lambda ids: training_target(ids, "three_class"), 3, "three_class"),
    "semantic + connected components": (lambda ids: ((ids > 0).astype(np.uint8), None), 2, None),
}


def data_set(count: int, size: int, seed: int):
    """(normalised image (1, H, W), ids) of `count` generated touching-cell images."""
    rng = np.random.default_rng(seed)
    cases = [render_touching_cells(rng, size) for _ in range(count)]
    return [(normalize(image[None]).astype(np.float16), ids) for image, ids in cases]


def train_cfg(args) -> dict:
    """The workflow's train defaults with the benchmark's budget (patch size and the like planned)."""
    return dict(train_defaults(), device=args.device, seed=0, precision="auto", epochs=args.epochs,
                iterations_per_epoch=args.iterations, val_share=0.1, batch_size=args.batch, patch_size=None,
                depth=3, base_width=16, norm="batch", deep_supervision=False, loss="ce_dice", optimizer="adam",
                lr=1e-3, weight_decay=0.0, lr_schedule="constant", warmup_iterations=0, grad_clip=0,
                foreground_oversampling=0.33, early_stopping=0, resume_every=10**6, compile=False,
                augment=AUGMENT_DEFAULTS)


def run_target(name: str, args, train, val, test, workdir: Path) -> dict:
    """Train one target and score its objects on the test images."""
    make_target, num_classes, target = TARGETS[name]
    train_cases = [(image, *make_target(ids)) for image, ids in train]
    cases = [[case if case[2] is not None else case[:2] for case in train_cases],
             [(image, make_target(ids)[0]) for image, ids in val]]
    log = logging.getLogger("bench")
    start = time.perf_counter()
    cfg, plan = planned_config(train_cfg(args), cases[0], num_classes)
    trainer = Trainer(cfg, plan, cases[0], cases[1], [str(i) for i in range(len(train))],
                      workdir / f"{name.split()[0]}.state", log)
    trainer.run(workdir / f"{name.split()[0]}_best.pt", workdir / f"{name.split()[0]}_last.pt")
    minutes = (time.perf_counter() - start) / 60
    model = trainer.model.eval()
    cfg = dict(overlap=0.5, batch_size=4, mirror=False, precision="auto")

    def softmax(image: np.ndarray) -> np.ndarray:
        return model_probabilities(model, torch.from_numpy(image[:, None].astype(np.float32)), trainer.patch, cfg,
                                   trainer.device)[:, 0].cpu().numpy()

    chosen = OBJECT_PROBABILITY
    if target:
        cases = [(softmax(image)[:, None], ids[None]) for image, ids in val]
        chosen = chosen_object_probability(object_probability_scores(cases, target, args.min_size))[0]
    scores = [object_metrics(ids, instances_from_probabilities(softmax(image), target, args.min_size, chosen)
                             if target else instances_from_foreground(softmax(image), args.min_size))
              for image, ids in test]
    table = pd.DataFrame(scores)
    return dict(target=name, f1=table["object_f1"].mean(), map=table["object_map"].mean(), aji=table["aji"].mean(),
                pq=table["pq"].mean(), object_probability=chosen if target else None, train_minutes=minutes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=25)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--min-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--targets", nargs="+", default=[name.split()[0] for name in TARGETS],
                        choices=[name.split()[0] for name in TARGETS], help="the targets to train (default: all)")
    parser.add_argument("--workdir", default="/tmp/unetflow_bench_instances")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cases = data_set(args.count, args.size, seed=0)
    n_test = n_val = max(2, args.count // 6)
    test, val, train = cases[:n_test], cases[n_test:n_test + n_val], cases[n_test + n_val:]
    objects = sum(len(np.unique(ids)) - 1 for _, ids in cases)
    print(f"{args.count} images of {args.size}x{args.size}: {objects} cells, "
          f"{sum(touching_pairs(ids) for _, ids in cases)} touching pairs; train/val/test {len(train)}/{len(val)}/"
          f"{len(test)}; {args.epochs} epochs x {args.iterations} iterations, batch {args.batch}")
    rows = [run_target(name, args, train, val, test, workdir) for name in TARGETS if name.split()[0] in args.targets]
    print(pd.DataFrame(rows).to_string(index=False, float_format="%.3f"))


if __name__ == "__main__":
    main()
