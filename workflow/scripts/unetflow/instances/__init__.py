"""The instance mode: targets, loss weights, objects."""
