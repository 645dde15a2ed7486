"""Experiment tracking (config section `tracking`, off by default): MLflow runs and TensorBoard event files of each
experiment and fold. `store` checks where they go (standard library only), `tracker` logs a training run,
`mlflow_client` opens a store, `artifacts` adds the report and the package to the runs of the training."""
