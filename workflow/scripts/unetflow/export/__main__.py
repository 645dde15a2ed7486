"""`python -m unetflow.export`: export a model package for other runtimes (see unetflow.export.cli)."""

from unetflow.export.cli import main

main()
