"""What the training data look like and the plan made from them."""
