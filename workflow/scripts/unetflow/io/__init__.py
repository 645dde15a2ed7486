"""I/O and array layer: files read as arrays and written back."""
