"""Embeddings from the embedded model, on the worker thread: inputs checked and cut to
the context, computed in batches that a caller going away stops between."""

from __future__ import annotations

import time

from aistack.backends.local.engine import Job
from aistack.backends.local.models import Models
from aistack.core.chat import EmbedRequest, EmbedResult, unit
from aistack.core.errors import ErrorKind, GatewayError, invalid


def embed_inputs(job: Job, models: Models, req: EmbedRequest, model: str) -> EmbedResult:
    t0 = time.monotonic_ns()
    emb = models.load_embedder()
    t1 = time.monotonic_ns()
    limit = min(models.n_ctx, 2048)
    inputs: list[str] = []
    sizes: list[int] = []
    tokens = 0
    for i, text in enumerate(req.inputs):
        data = text.encode()
        if len(data) > limit and len(data) > limit * models.longest_token(emb):
            # Certainly too long (see prompt_tokens): cut before tokenizing it all.
            if not req.truncate:
                raise invalid("the input length exceeds the context length", "input")
            data = data[: limit * models.longest_token(emb)]
        toks = emb.tokenize(data, add_bos=True)
        if not toks:
            # llama.cpp fails to decode nothing (and the process crashed at exit).
            raise invalid(f"invalid input: 'input[{i}]' has no tokens", f"input[{i}]")
        if len(toks) > limit:
            if not req.truncate:
                raise invalid("the input length exceeds the context length", "input")
            text = emb.detokenize(toks[1:limit]).decode("utf-8", "ignore")
            toks = toks[:limit]
        tokens += len(toks)
        inputs.append(text)
        sizes.append(len(toks))
    vectors: list[list[float]] = []
    for group in _groups(inputs, sizes, emb.n_batch):
        # A long embedding stops between batches when its caller goes away (one
        # llama_decode each); close() aborts the one under way (Models._abortable).
        if job.cancel.is_set():
            raise GatewayError(ErrorKind.CLIENT_CLOSED, "the embedding was abandoned")
        out = emb.create_embedding(group)
        vectors += [d["embedding"] for d in out["data"]]
    if req.dimensions:
        vectors = [v[: req.dimensions] for v in vectors]
    if req.normalize:
        vectors = [unit(v) for v in vectors]
    end = time.monotonic_ns()
    return EmbedResult(
        model=model,
        embeddings=vectors,
        prompt_tokens=tokens,
        total_ns=end - t0,
        load_ns=max(1, t1 - t0),
    )


def _groups(inputs: list[str], sizes: list[int], limit: int) -> list[list[str]]:
    """Inputs in runs of at most `limit` tokens (one input over it alone)."""
    out: list[list[str]] = []
    run: list[str] = []
    n = 0
    for text, size in zip(inputs, sizes, strict=True):
        if run and n + size > limit:
            out.append(run)
            run, n = [], 0
        run.append(text)
        n += size
    if run:
        out.append(run)
    return out
