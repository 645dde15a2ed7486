"""`python -m unetflow.infer`: segment images with a model package (see unetflow.infer.infer)."""

from unetflow.infer.infer import main

main()
