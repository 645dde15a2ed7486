"""The MLflow client of a store and the experiment of a run in it (MLflow is imported only when they are called)."""

import os

from unetflow.tracking.store import local_path, store_kind


def experiment_id(client, name: str, artifact_location: str | None) -> str:
    """The id of MLflow experiment `name`, created when missing (by whichever fold comes first)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location)
    except MlflowException:  # another fold's job created it meanwhile
        return client.get_experiment_by_name(name).experiment_id


def artifact_location(uri: str, experiment: str) -> str | None:
    """Where an SQLite store keeps an experiment's artifacts: beside the database file (MLflow's default is the job's
    working directory); a server or a folder store decides itself."""
    if store_kind(uri) != "sqlite":
        return None
    database = local_path(uri)
    return str(database.parent / f"{database.stem}-artifacts" / experiment)


def client_for(uri: str):
    """An MLflow client of store `uri` (a folder store, in maintenance mode in MLflow 3, is opted into)."""
    if store_kind(uri) == "folder":
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)
