"""The run's files: layout and atomic writes, shard files, the writer lock."""
