"""Per-key rate and concurrency limits: in-process by default, shared through Redis."""
