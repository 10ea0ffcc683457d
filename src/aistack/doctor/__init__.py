"""The runbook as code: `aistack doctor`'s checks, and the per-app config snippets."""
