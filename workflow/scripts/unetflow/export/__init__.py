"""Model packages exported for other runtimes."""
