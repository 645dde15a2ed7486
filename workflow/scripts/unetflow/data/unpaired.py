"""Images without a mask: a problem of the data set, or, with `data.unpaired: skip` (a folder where only some images
are annotated yet, a QuPath project's unannotated slides), left out with a log line naming them."""

import logging
from pathlib import Path

log = logging.getLogger("unetflow.data.unpaired")


class UnpairedImage(str):
    """The problem of an image without a mask (its message, a str), with the `image` it names."""

    def __new__(cls, message: str, image):
        problem = super().__new__(cls, message)
        problem.image = Path(image)
        return problem


def kept_problems(problems: list[str], unpaired: str) -> list[str]:
    """The problems, but with `unpaired` 'skip' those of images without a mask, which are logged as left out."""
    if unpaired != "skip":
        return problems
    skipped = [problem.image for problem in problems if isinstance(problem, UnpairedImage)]
    if skipped:
        shown = ", ".join(str(image) for image in skipped[:5])
        log.warning("%d image(s) without a mask left out (data.unpaired: skip): %s%s", len(skipped), shown,
                    ", ..." if len(skipped) > 5 else "")
    return [problem for problem in problems if not isinstance(problem, UnpairedImage)]
