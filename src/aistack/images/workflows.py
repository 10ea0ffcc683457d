"""Which graph runs for an image model on a backend, with the request's values bound in.

A `comfyui` backend either names its workflows (`workflows:` in the config: a public
model name -> an API-format workflow file and optional bindings), or serves every
checkpoint ComfyUI has through the built-in text-to-image workflow, the checkpoint
file bound into its loader. Files are read and checked once, when the gateway is
built, so a broken workflow stops startup with its path, not a request later.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aistack.core.errors import ErrorKind, GatewayError
from aistack.core.images import ImageRequest
from aistack.core.models import canonical
from aistack.dialects import comfyui as wire


@dataclass(frozen=True, slots=True)
class Workflow:
    name: str  # the public model name it serves
    graph: wire.Graph
    bindings: dict[str, tuple[wire.Target, ...]]
    source: str = "built-in"

    @property
    def takes_image(self) -> bool:
        return "image" in self.bindings

    def check(self, req: ImageRequest) -> None:
        wire.check_request(self.bindings, req, req.image is not None)

    def describe(self) -> dict[str, Any]:
        """What the console and /v1/models say about it: the knobs it has and defaults."""
        return {
            "source": self.source,
            "inputs": sorted(self.bindings),
            "defaults": wire.defaults(self.graph, self.bindings),
        }


def _builtin() -> Workflow:
    g = wire.BUILTIN_TXT2IMG
    return Workflow("", g, wire.merge_bindings(g, {}))


BUILTIN = _builtin()


def load(name: str, path: Path, bindings: Mapping[str, object] | None) -> Workflow:
    """A workflow file, checked: raises ValueError naming the file and what is wrong."""
    where = str(path)
    try:
        graph = json.loads(path.read_text())
    except OSError as e:
        raise ValueError(f"{where}: cannot read the workflow: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not JSON: {e}") from None
    g = wire.check_graph(graph, where)
    given = wire.parse_bindings(bindings or {}, g, where)
    merged = wire.merge_bindings(g, given)
    if "prompt" not in merged:
        raise ValueError(
            f"{where}: no prompt input found; add bindings.prompt: 'node_id.input' for the "
            "text the prompt goes into"
        )
    if not wire.output_nodes(g):
        raise ValueError(f"{where}: the workflow has no SaveImage (or PreviewImage) node")
    return Workflow(name, g, merged, where)


@dataclass(slots=True)
class Workflows:
    """The workflows of every `comfyui` backend: (backend, canonical model) -> Workflow."""

    named: dict[tuple[str, str], Workflow] = field(default_factory=dict)

    def add(self, backend: str, wf: Workflow) -> None:
        self.named[(backend, canonical(wf.name))] = wf

    def for_model(self, backend: str, model: str) -> Workflow:
        """The named workflow, else the built-in one (checkpoint models)."""
        return self.named.get((backend, canonical(model)), BUILTIN)

    def graph(
        self,
        backend: str,
        model: str,
        req: ImageRequest,
        *,
        seed: int,
        checkpoint: str | None,
        image_name: str | None,
        prefix: str,
    ) -> wire.Graph:
        wf = self.for_model(backend, model)
        if wf is BUILTIN and not checkpoint:
            raise GatewayError(
                ErrorKind.NOT_FOUND,
                f"backend '{backend}' has no checkpoint for '{model}' any more",
                param="model",
                code="model_not_found",
            )
        return wire.bind(
            wf.graph,
            wf.bindings,
            req,
            seed=seed,
            checkpoint=checkpoint if wf is BUILTIN else None,
            image_name=image_name,
            prefix=prefix,
        )
