"""The resolution a 2D experiment trains and predicts at, weighed against its budget: when the network would see its
training pixels fewer than TARGET_PASSES times within the budget at the stored resolution (large images, many of them, a
short budget: a CPU's ten minutes on a thousand endoscopy frames), the stored images are resized by the largest of
RESOLUTIONS that reaches the target (else the one with the most passes), the patch planned anew for the smaller images,
as long as the finest class keeps its structure (its median distance to another class at least MIN_BOUNDARY_DISTANCE px)
and the median image's shorter side SMALLEST_SIDE px. A budget in steps counts them; a time budget divides its training
time by the step time measured on the device (`unetflow.train.timing`), so the choice depends on the machine the plan
runs on, and the plan records each resolution tried with its patch, batch, step time and passes.

Volumes keep their resolution (their grid is the target spacing), and so do the instance mode (its thin object
borders are what it learns) and regions of whole-slide images (their pixel size is data.slide_pixel_size).
"""

import math

TARGET_PASSES = 10  # times the network sees the training pixels within the budget, at least, where it can
RESOLUTIONS = (1.0, 0.71, 0.5, 0.35, 0.25, 0.18, 0.125)  # halving the pixels each step
MIN_BOUNDARY_DISTANCE = 3.0  # px: a disc of about 20 px across, or a band about 6 px wide
SMALLEST_SIDE = 64  # px
SLIDES_KEEP_SIZE = ("regions of whole-slide images are trained at data.slide_pixel_size, the size slides are "
                    "predicted at (a coarser one trains larger objects)")  # why their scale and resolution stay 1


def scaled_traits(traits: dict, factor: float) -> dict:
    """Training traits of the stored 2D sources resized by `factor`."""
    return dict(traits, median_size=[max(1, round(side * factor)) for side in traits["median_size"]],
                object_diameter_p90=round(traits["object_diameter_p90"] * factor, 1),
                boundary_distance=round(traits["boundary_distance"] * factor, 2),
                pixels=round(traits["pixels"] * factor**2))


def budget_passes(budget, step_time: float | None, batch: int, patch: list[int], pixels: int, val_share: float):
    """How often a budget's training steps (`budget`: unetflow.train.schedule.Budget; a time budget's steps from the
    measured `step_time`, validation's share of it taken off) cover `pixels` training pixels with patches."""
    steps = budget.steps if budget.steps is not None else budget.seconds * (1 - val_share) / step_time
    return steps * batch * math.prod(patch) / max(1, pixels)


def resolution_floor(traits: dict) -> tuple[float, str]:
    """The smallest factor the finest class and the image size allow, and which of them sets it."""
    by_class = MIN_BOUNDARY_DISTANCE / traits["boundary_distance"] if traits["boundary_distance"] else 1.0
    by_size = SMALLEST_SIDE / min(traits["median_size"])
    if by_class >= by_size:
        return by_class, (f"the finest class's median distance to another class ({traits['boundary_distance']:g} px) "
                          f"must stay at least {MIN_BOUNDARY_DISTANCE:g} px")
    return by_size, (f"the median image's shorter side ({min(traits['median_size'])} px) must stay at least "
                     f"{SMALLEST_SIDE} px")


def thin_structure_loss(factor: float, boundary_distance: float | None, key: str, planned: str = "null") -> str | None:
    """For a resize `factor` set in the config (`key`, whose value `planned` leaves it to the planner): what it does
    to the finest class when it brings the class's median distance to another class (`boundary_distance`, px) under
    MIN_BOUNDARY_DISTANCE, the planner's floor; else None."""
    if not boundary_distance or factor >= 1 or boundary_distance * factor >= MIN_BOUNDARY_DISTANCE:
        return None
    return (f"{key} {factor:g} shrinks the finest class's median distance to another class from {boundary_distance:g} "
            f"px to {boundary_distance * factor:.2g} px, under the {MIN_BOUNDARY_DISTANCE:g} px the planner keeps: "
            f"thin structures (vessels, membranes) are lost in training and prediction; leave {key} to the planner "
            f"({planned}) or set it to at least {min(1.0, MIN_BOUNDARY_DISTANCE / boundary_distance):.2g}")


def resolution_trial(traits: dict, factor: float, budget, val_share: float, settings_at, step_time_of) -> dict:
    """The stored 2D images trained at `factor`: resolution, patch_size, batch_size, step_seconds (None for a step
    budget) and passes over the training pixels in the budget (see `plan_resolution`)."""
    settings = settings_at(scaled_traits(traits, factor))
    seconds = step_time_of(settings) if budget.steps is None else None
    passes = budget_passes(budget, seconds, settings["batch_size"], settings["patch_size"],
                           scaled_traits(traits, factor)["pixels"], val_share)
    return dict(resolution=factor, patch_size=settings["patch_size"], batch_size=settings["batch_size"],
                step_seconds=None if seconds is None else round(seconds, 4), passes=float(f"{passes:.3g}"))


def few_passes(trial: dict, key: str) -> str | None:
    """For a resolution set in the config (`key`; its `resolution_trial`): the warning when the budget lets the
    network see the training pixels fewer than TARGET_PASSES times; else None."""
    if trial["passes"] >= TARGET_PASSES:
        return None
    step = "" if trial["step_seconds"] is None else f", a step measured at {trial['step_seconds']:.3g} s"
    return (f"{key} {trial['resolution']:g}: the network sees the training pixels {trial['passes']:g} times in the "
            f"budget (patch {trial['patch_size']}, batch {trial['batch_size']}{step}), under the {TARGET_PASSES} the "
            f"planner aims for, so it may stop undertrained; leave {key} to the planner (null) or raise the budget "
            f"({budget_key(trial)})")


def budget_key(trial: dict) -> str:
    """The setting that raises a trial's budget: the minutes of a time budget (its step was timed), else the steps."""
    return "train.budget_minutes" if trial["step_seconds"] is not None else "train.epochs or train.budget_steps"


def undertrained_note(trials: list[dict], resolution: float) -> str | None:
    """For a planned resolution (one of `trials`) at which the budget lets the network see the training pixels fewer
    than TARGET_PASSES times (no lower resolution gave enough): the warning; else None."""
    chosen = next((trial for trial in trials if trial["resolution"] == resolution), None)
    if chosen is None or chosen["passes"] >= TARGET_PASSES:
        return None
    return (f"the budget lets the network see the training pixels {chosen['passes']:g} times (resolution "
            f"{resolution:g}, patch {chosen['patch_size']}, batch {chosen['batch_size']}), under the {TARGET_PASSES} "
            f"the planner aims for, and no lower resolution the data allow gives more (the resolution's reason in "
            f"plan.json): the model may stop undertrained; raise {budget_key(chosen)}")


def plan_resolution(traits: dict, budget, val_share: float, settings_at, step_time_of) -> tuple[float, str, list]:
    """The factor stored 2D images are trained at, why, and the resolutions tried (each: resolution, patch_size,
    batch_size, step_seconds (None for a step budget), passes): the largest that reaches TARGET_PASSES, else the one
    with the most passes (the largest among equals: with a step budget and patches as large as the images, a lower
    resolution gains nothing). `settings_at(traits)`: the planned settings for traits; `step_time_of(settings)`: a
    measured step time (called for time budgets only)."""
    floor, floor_reason = resolution_floor(traits)
    trials = []
    for factor in (f for f in RESOLUTIONS if f == 1.0 or f >= floor):
        trials.append(resolution_trial(traits, factor, budget, val_share, settings_at, step_time_of))
        if trials[-1]["passes"] >= TARGET_PASSES:
            break
    first = trials[0]
    chosen = trials[-1] if trials[-1]["passes"] >= TARGET_PASSES else max(trials, key=lambda trial: trial["passes"])
    reason = f"{first['passes']:g} passes over the training pixels at the stored resolution in {budget.describe()}"
    if budget.steps is None:
        reason += f" (a step measured at {first['step_seconds']:.3g} s on this device)"
    if first["passes"] >= TARGET_PASSES:
        return 1.0, f"{reason}, at least {TARGET_PASSES}", trials
    reason += f", under {TARGET_PASSES}"
    if chosen is not first:
        reason += f": {chosen['passes']:g} at {chosen['resolution']:g}"
    if len(trials) == 1:
        reason += f"; no lower resolution, as {floor_reason}"
    elif chosen["passes"] < TARGET_PASSES:
        reason += f"; the most passes down to {trials[-1]['resolution']:g}, as {floor_reason}"
    return chosen["resolution"], reason, trials


def no_resolution_choice(traits: dict, instances: bool) -> str | None:
    """Why the resolution stays 1 whatever the budget, or None when it is planned."""
    if traits.get("boundary_distance") is None:
        return "no 2D images among the training sources (NIfTI volumes keep their target spacing)"
    if instances:
        return "the instance mode learns thin object borders at full resolution"
    if traits.get("slides"):
        return SLIDES_KEEP_SIZE
    return None


def image_scale(preprocess: dict, resolution: float) -> dict | None:
    """What the network sees of a 2D file: preprocess.scale (`preprocess`: the settings as applied) times the
    resolution, with both and the scale's reason; None where the sources are not scaled (volumes)."""
    if preprocess.get("scale") is None:
        return None
    scale = float(preprocess["scale"])
    return dict(value=round(scale * resolution, 4), preprocess_scale=scale, resolution=resolution,
                reason=f"preprocess.scale {scale:g} ({preprocess['scale_source']}) x train.resolution {resolution:g}")
