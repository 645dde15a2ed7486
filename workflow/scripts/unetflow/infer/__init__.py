"""Trained models applied to images: tiling, the predictor, model packages."""
