"""Where experiment tracking writes, checked before any training time is spent: the MLflow store of
`tracking.mlflow` (a server that must answer within `tracking.timeout` seconds, an SQLite file or a folder whose place
must be writable) and the TensorBoard folder of `tracking.tensorboard`.

Standard library only: the Snakefile imports it to refuse an unreachable store before any job runs.
"""

import tempfile
import urllib.error
import urllib.request
from pathlib import Path

SERVER_SCHEMES = ("http://", "https://")
SQLITE = "sqlite:///"
FILE = "file://"
FORMS = ("an http(s):// server URI, sqlite:///path/to/mlflow.db (relative) or sqlite:////absolute/mlflow.db, or a "
         "folder")


def tracking_on(tracking: dict) -> bool:
    """Whether the section turns MLflow or TensorBoard on."""
    return tracking["mlflow"] is not None or tracking["tensorboard"] is not False


def store_kind(uri: str) -> str:
    """`server`, `sqlite`, `folder`, or ValueError naming tracking.mlflow for a form unetflow does not write to."""
    if uri.startswith(SERVER_SCHEMES):
        return "server"
    if uri.startswith(SQLITE) and len(uri) > len(SQLITE):
        return "sqlite"
    if uri.startswith(FILE) or "://" not in uri and ":" not in uri.split("/")[0]:
        return "folder"
    raise ValueError(f"config key tracking.mlflow = {uri!r}: not a store unetflow tracks to; give {FORMS}")


def local_path(uri: str) -> Path:
    """The file (SQLite) or folder of a local MLflow store."""
    return Path(uri[len(SQLITE):] if uri.startswith(SQLITE) else uri.removeprefix(FILE))


def absolute_uri(uri: str) -> str:
    """The store URI with a local path made absolute (a job elsewhere on the cluster finds the same store)."""
    kind = store_kind(uri)
    if kind == "server":
        return uri.rstrip("/")
    path = local_path(uri).resolve()
    return f"sqlite:///{path}" if kind == "sqlite" else str(path)


def server_problem(uri: str, timeout: float) -> str | None:
    """Why the MLflow server at `uri` cannot be used (no answer within `timeout` seconds), or None. Any HTTP answer
    counts: the server is there (authentication is MLflow's own business)."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return (f"config key tracking.mlflow: the MLflow server {uri} did not answer within {timeout:g} s "
                f"(tracking.timeout): {reason}; start it, correct the URI, or set tracking.mlflow: null")


def folder_problem(folder: Path, key: str) -> str | None:
    """Why `folder` cannot be created and written to (its nearest existing parent is no folder, or is not
    writable: a file is created and removed there to find out), or None."""
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    if not existing.is_dir():
        return f"config key {key}: {folder} cannot be a folder: {existing} is a file"
    try:
        with tempfile.TemporaryFile(dir=existing):
            return None
    except OSError as error:
        return f"config key {key}: {folder} cannot be written: {existing} is not writable ({error.strerror})"


def mlflow_problem(uri: str, timeout: float) -> str | None:
    """Why the MLflow store `uri` cannot be tracked to, or None."""
    try:
        kind = store_kind(uri)
    except ValueError as error:
        return str(error)
    if kind == "server":
        return server_problem(uri, timeout)
    path = local_path(uri).absolute()
    if kind == "sqlite" and path.is_dir():
        return f"config key tracking.mlflow: {uri} names a folder, not an SQLite file"
    return folder_problem(path.parent if kind == "sqlite" else path, "tracking.mlflow")


def tensorboard_root(tracking: dict, results: str) -> Path | None:
    """The folder of TensorBoard's experiment folders: tracking.tensorboard, `results` for `true`, None when off."""
    value = tracking["tensorboard"]
    return None if value is False else Path(results if value is True else value)


def tensorboard_dir(tracking: dict, results: str, experiment: str, fold: int) -> Path | None:
    """The event file folder of one experiment and fold: <results>/<experiment>/tensorboard/fold<k> for `true`,
    <tracking.tensorboard>/<experiment>/fold<k> for a folder; None when off."""
    root = tensorboard_root(tracking, results)
    if root is None:
        return None
    return root / experiment / "tensorboard" / f"fold{fold}" if tracking["tensorboard"] is True else \
        root / experiment / f"fold{fold}"


def store_problems(tracking: dict, results: str) -> list[str]:
    """What keeps the tracking section from being written to (each names its key); nothing when tracking is off."""
    problems = []
    if tracking["mlflow"] is not None:
        problems.append(mlflow_problem(tracking["mlflow"], tracking["timeout"]))
    if tracking["tensorboard"] is not False:
        problems.append(folder_problem(tensorboard_root(tracking, results).absolute(), "tracking.tensorboard"))
    return [problem for problem in problems if problem]


def refuse_unusable_store(tracking: dict, results: str) -> None:
    """ValueError listing `store_problems`, for a job about to track."""
    problems = store_problems(tracking, results)
    if problems:
        raise ValueError("; ".join(problems))
