"""`python -m unetflow.export`: export a model package for other runtimes (see unetflow.export.onnx)."""

from unetflow.export.onnx import main

main()
