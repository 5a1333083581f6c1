"""The job layer: the DSL (``Job``, thread-local current job), chunking, events, ``JobResult``."""
