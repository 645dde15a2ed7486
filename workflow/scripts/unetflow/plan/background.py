"""Whether class 0 of a data set is a dominant background: what the planned `train.dice_background: auto` and the
leaderboard's rank decide by (without torch, for the leaderboard's environment)."""


def dominant_background(class_shares: list[float]) -> bool:
    """Class 0 covers at least as many training pixels as the largest other class (`class_shares`: per class)."""
    return class_shares[0] >= max(class_shares[1:], default=0.0)
