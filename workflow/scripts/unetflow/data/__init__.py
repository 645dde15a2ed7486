"""The data set: pairing, checks, splits, normalisation, preprocessing, demo data."""
