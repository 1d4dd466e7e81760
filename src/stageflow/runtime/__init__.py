"""The loop that turns decisions into effects: executors, store, artifacts, logs."""
