"""unetflow: the library behind the workflow's scripts (one module per stage)."""
