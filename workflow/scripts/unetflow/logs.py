"""Logging for the stage scripts: every message and any uncaught error go to the rule's log file and to stderr."""

import logging
import sys


def stage_logger(log_path: str, name: str = "unetflow") -> logging.Logger:
    """Log to `log_path` and stderr, and record uncaught exceptions there too, so a failed job's log says why: the
    problems unetflow names (its own exception classes, e.g. DataValidationError) by their message alone, other
    exceptions with their traceback."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    for handler in (logging.FileHandler(log_path, mode="w"), logging.StreamHandler(sys.stderr)):
        handler.setFormatter(formatter)
        logger.addHandler(handler)

    def log_uncaught(exc_type, exc, tb):
        named = exc_type.__module__.startswith("unetflow.")  # a problem unetflow names: its message says it all
        logger.error("%s: %s", exc_type.__name__, exc, exc_info=None if named else (exc_type, exc, tb))

    sys.excepthook = log_uncaught
    return logger
