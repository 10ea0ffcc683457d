"""The Anthropic Messages API: wire <-> core, requests, whole messages and streams."""
