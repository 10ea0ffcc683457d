"""ComfyUI's graph API <-> the hub's image values: workflows, bindings, events, outputs.

A workflow is an API-format graph (what ComfyUI's "Save (API Format)" writes): node ids
mapping to `{"class_type", "inputs"}`, where an input is a literal or a link
`[node_id, output_index]`. A binding says which node input receives one of the
request's knobs (Open WebUI's idea): `prompt`, `negative_prompt`, `width`, `height`,
`n` (the batch size), `seed`, `steps`, `cfg`, `checkpoint`, `image` (edits). Knobs
without a binding are found in the graph (`discover`): the prompt and negative prompt
are the text inputs the sampler's `positive` and `negative` links lead to, the size
and batch the empty latent's, and so on. Only literal inputs can be bound.

Everything here is pure: graphs in, graphs out; ComfyUI's WebSocket messages and
history entries in, core events and output references out.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any

from aistack.core.errors import invalid
from aistack.core.images import ImageEvent, ImageRequest, OutputRef
from aistack.core.models import ModelCard, ModelDetails

Graph = dict[str, Any]
Target = tuple[str, str]  # (node id, input name)

KNOBS = (
    "prompt", "negative_prompt", "width", "height", "n", "seed", "steps", "cfg", "checkpoint",
    "image",
)  # fmt: skip

# What each knob's input is called on the nodes discovery looks at.
_SAMPLERS = ("KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced")
_SEED_INPUTS = ("seed", "noise_seed")
_TEXT_INPUTS = ("text", "text_g", "text_l", "prompt")
_SIZE_INPUTS = ("width", "height", "batch_size")


# The built-in text-to-image workflow: every checkpoint ComfyUI has, with no workflow file.
# ComfyUI's own script_examples/websockets_api_example.py graph, SD1.5-sized by default.
BUILTIN_TXT2IMG: Graph = {
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 0,
            "steps": 20,
            "cfg": 7.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1.0,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ""}},
    "5": {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": 512, "height": 512, "batch_size": 1},
    },
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "aistack", "images": ["8", 0]}},
}


def _is_link(v: object) -> bool:
    return isinstance(v, list) and len(v) == 2 and isinstance(v[0], str | int)


def check_graph(graph: object, where: str) -> Graph:
    """An API-format graph, or a clear error (the UI's own format is a common mistake)."""
    if not isinstance(graph, dict) or not graph:
        raise ValueError(f"{where}: expected an API-format workflow (an object of nodes)")
    if "nodes" in graph and "links" in graph:
        raise ValueError(
            f"{where}: this is ComfyUI's UI format; export it with 'Save (API Format)'"
        )
    for nid, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise ValueError(f"{where}: node {nid!r} has no class_type")
        if not isinstance(node.get("inputs", {}), dict):
            raise ValueError(f"{where}: node {nid!r}: inputs must be an object")
    return graph


def _targets(spec: object, graph: Graph, knob: str, where: str) -> tuple[Target, ...]:
    items = spec if isinstance(spec, list) else [spec]
    out: list[Target] = []
    for item in items:
        if not isinstance(item, str) or "." not in item:
            raise ValueError(f"{where}: bindings.{knob}: {item!r} must be 'node_id.input'")
        nid, _, name = item.partition(".")
        node = graph.get(nid)
        if node is None:
            raise ValueError(f"{where}: bindings.{knob}: no node {nid!r} in the workflow")
        if name not in node.get("inputs", {}):
            raise ValueError(
                f"{where}: bindings.{knob}: node {nid!r} ({node['class_type']}) has no input "
                f"{name!r}"
            )
        out.append((nid, name))
    return tuple(out)


def parse_bindings(
    raw: Mapping[str, object], graph: Graph, where: str
) -> dict[str, tuple[Target, ...]]:
    out: dict[str, tuple[Target, ...]] = {}
    for knob, spec in raw.items():
        if knob not in KNOBS:
            raise ValueError(f"{where}: bindings.{knob}: unknown; use one of {', '.join(KNOBS)}")
        out[knob] = _targets(spec, graph, knob, where)
    return out


def _literal(graph: Graph, nid: str, name: str) -> bool:
    node = graph.get(nid)
    inputs = node.get("inputs", {}) if node is not None else {}
    return name in inputs and not _is_link(inputs[name])


def _text_node(graph: Graph, link: object, depth: int = 0) -> Target | None:
    """The text input a conditioning link leads to (through combine/concat nodes)."""
    if not _is_link(link) or depth > 6:
        return None
    assert isinstance(link, list)
    nid = str(link[0])
    node = graph.get(nid)
    if node is None:
        return None
    inputs = node.get("inputs", {})
    for name in _TEXT_INPUTS:
        if name in inputs and isinstance(inputs[name], str):
            return nid, name
    for v in inputs.values():
        found = _text_node(graph, v, depth + 1)
        if found is not None:
            return found
    return None


def _order(nid: str) -> tuple[int, str]:
    return (int(nid), nid) if nid.isdigit() else (1 << 30, nid)


def discover(graph: Graph) -> dict[str, tuple[Target, ...]]:
    """Bindings found in the graph for every knob it has a place for."""
    out: dict[str, tuple[Target, ...]] = {}
    nodes = sorted(graph, key=_order)
    samplers = [n for n in nodes if graph[n]["class_type"] in _SAMPLERS]
    for sampler in samplers:
        inputs = graph[sampler].get("inputs", {})
        for knob, link in (("prompt", "positive"), ("negative_prompt", "negative")):
            t = _text_node(graph, inputs.get(link))
            if t is not None and knob not in out:
                out[knob] = (t,)
    if "prompt" not in out:
        texts = [n for n in nodes if graph[n]["class_type"].startswith("CLIPTextEncode")]
        for n in texts:
            title = str(graph[n].get("_meta", {}).get("title", "")).lower()
            name = next((k for k in _TEXT_INPUTS if _literal(graph, n, k)), None)
            if name is None:
                continue
            knob = "negative_prompt" if "negative" in title else "prompt"
            out.setdefault(knob, ((n, name),))

    def all_with(names: tuple[str, ...], classes: tuple[str, ...] | None = None) -> list[Target]:
        found: list[Target] = []
        for n in nodes:
            cls = graph[n]["class_type"]
            if classes is not None and cls not in classes:
                continue
            for name in names:
                if _literal(graph, n, name):
                    found.append((n, name))
                    break
        return found

    sized = [
        n
        for n in nodes
        if all(_literal(graph, n, k) for k in _SIZE_INPUTS)
        and graph[n]["class_type"].startswith("Empty")
    ]
    if sized:
        out["width"] = tuple((n, "width") for n in sized)
        out["height"] = tuple((n, "height") for n in sized)
        out["n"] = tuple((n, "batch_size") for n in sized)
    seeds = all_with(_SEED_INPUTS, (*_SAMPLERS, "RandomNoise"))
    if seeds:
        out["seed"] = tuple(seeds)
    steps = all_with(("steps",), (*_SAMPLERS, "BasicScheduler"))
    if steps:
        out["steps"] = tuple(steps)
    cfg = all_with(("cfg",), (*_SAMPLERS, "CFGGuider"))
    if cfg:
        out["cfg"] = tuple(cfg)
    ckpt = all_with(("ckpt_name",), ("CheckpointLoaderSimple", "CheckpointLoader"))
    if ckpt:
        out["checkpoint"] = tuple(ckpt)
    image = all_with(("image",), ("LoadImage",))
    if image:
        out["image"] = tuple(image)
    return out


def merge_bindings(
    graph: Graph, given: Mapping[str, tuple[Target, ...]]
) -> dict[str, tuple[Target, ...]]:
    """Given bindings win; the rest are discovered."""
    found = discover(graph)
    found.update(given)
    return found


def defaults(graph: Graph, bindings: Mapping[str, tuple[Target, ...]]) -> dict[str, Any]:
    """The workflow's own value of each bound knob (its first target's)."""
    out: dict[str, Any] = {}
    for knob, targets in bindings.items():
        if targets:
            nid, name = targets[0]
            out[knob] = graph[nid]["inputs"][name]
    return out


def check_request(
    bindings: Mapping[str, tuple[Target, ...]], req: ImageRequest, with_image: bool
) -> None:
    """A 400 for what the request asks that the workflow has no place for."""
    if "prompt" not in bindings:
        raise invalid(f"model '{req.model}': its workflow has no prompt input to fill", "prompt")
    if req.n != 1 and "n" not in bindings:
        raise invalid(f"model '{req.model}' makes one image per request (n must be 1)", "n")
    if with_image and "image" not in bindings:
        raise invalid(f"model '{req.model}' does not take an input image", "image")
    if not with_image and "image" in bindings:
        raise invalid(f"model '{req.model}' needs an input image: use /v1/images/edits", "image")
    if req.negative_prompt and "negative_prompt" not in bindings:
        raise invalid(f"model '{req.model}' has no negative prompt", "negative_prompt")


def bind(
    graph: Graph,
    bindings: Mapping[str, tuple[Target, ...]],
    req: ImageRequest,
    *,
    seed: int,
    checkpoint: str | None = None,
    image_name: str | None = None,
    prefix: str = "aistack",
) -> Graph:
    """A copy of the graph with the request's values in their inputs.

    A knob the request sets but the workflow has no place for is the caller's mistake
    when it changes the result (n > 1, an input image), and is ignored otherwise.
    """
    g = copy.deepcopy(graph)
    values: dict[str, Any] = {"prompt": req.prompt, "seed": seed}
    if req.negative_prompt:
        values["negative_prompt"] = req.negative_prompt
    knobs = {"width": req.width, "height": req.height, "steps": req.steps, "cfg": req.cfg}
    values.update({k: v for k, v in knobs.items() if v is not None})
    if req.n != 1:
        values["n"] = req.n
    if checkpoint is not None:
        values["checkpoint"] = checkpoint
    if image_name is not None:
        values["image"] = image_name
    check_request(bindings, req, image_name is not None)
    for knob, v in values.items():
        for nid, name in bindings.get(knob, ()):
            g[nid]["inputs"][name] = v
    for node in g.values():
        # Our own file names, so outputs never collide with the UI's and are recognisable.
        if node.get("class_type") == "SaveImage" and "filename_prefix" in node.get("inputs", {}):
            node["inputs"]["filename_prefix"] = prefix
    return g


def output_nodes(graph: Graph) -> list[str]:
    kinds = ("SaveImage", "PreviewImage")
    return [n for n in sorted(graph, key=_order) if graph[n]["class_type"] in kinds]


# ---------------------------------------------------------------------------------------
# what ComfyUI answers


def checkpoints_from_object_info(obj: Mapping[str, Any]) -> list[str]:
    """`/object_info/CheckpointLoaderSimple` -> the checkpoint files it offers.

    The choice list is `[[files...]]` in older builds and `["COMBO", {"options": [...]}]`
    in newer ones."""
    node = obj.get("CheckpointLoaderSimple")
    if not isinstance(node, dict):
        return []
    spec = node.get("input", {}).get("required", {}).get("ckpt_name")
    if not isinstance(spec, list) or not spec:
        return []
    if isinstance(spec[0], list):
        return [s for s in spec[0] if isinstance(s, str)]
    if len(spec) > 1 and isinstance(spec[1], dict):
        opts = spec[1].get("options")
        if isinstance(opts, list):
            return [s for s in opts if isinstance(s, str)]
    return []


def model_name(checkpoint: str) -> str:
    """The public name of a checkpoint file: its base name without the extension."""
    base = checkpoint.replace("\\", "/").rsplit("/", 1)[-1]
    return os.path.splitext(base)[0] or base


def image_card(name: str, backend: str, fmt: str = "") -> ModelCard:
    return ModelCard(
        name=name,
        backend=backend,
        owned_by=backend,
        capabilities=("image",),
        details=ModelDetails(format=fmt, family="comfyui"),
    )


def prompt_error(body: object) -> str:
    """POST /prompt's 400: `{"error": {type, message, details}, "node_errors": {...}}`."""
    if not isinstance(body, dict):
        return str(body)[:300] or "the workflow was refused"
    err = body.get("error")
    msg = ""
    if isinstance(err, dict):
        msg = str(err.get("message") or err.get("type") or "")
        details = err.get("details")
        if details:
            msg += f": {details}"
    elif err:
        msg = str(err)
    parts: list[str] = []
    ne = body.get("node_errors")
    if isinstance(ne, dict):
        for nid, info in ne.items():
            if not isinstance(info, dict):
                continue
            cls = info.get("class_type", "")
            parts += [
                f"node {nid} ({cls}): {e.get('message', '')} {e.get('details', '')}".strip()
                for e in info.get("errors", []) or []
                if isinstance(e, dict)
            ]
    if parts:
        msg += "; " + "; ".join(parts[:5])
    return msg or "the workflow was refused"


def event_from_wire(msg: Mapping[str, Any]) -> ImageEvent | None:
    """One WebSocket text message -> an event about one prompt, or None (status etc.)."""
    kind = msg.get("type")
    data = msg.get("data")
    if not isinstance(data, dict):
        return None
    pid = data.get("prompt_id")
    if not isinstance(pid, str):
        return None
    if kind == "execution_start":
        return ImageEvent(kind="started", prompt_id=pid)
    if kind == "executing":
        node = data.get("node")
        if node is None:
            return ImageEvent(kind="done", prompt_id=pid)
        return ImageEvent(kind="node", prompt_id=pid, node=str(node))
    if kind == "progress":
        v, m = data.get("value"), data.get("max")
        if not isinstance(v, int) or not isinstance(m, int):
            return None
        return ImageEvent(kind="progress", prompt_id=pid, node=str(data.get("node") or ""),
                          value=v, max=m)  # fmt: skip
    if kind == "execution_error":
        return ImageEvent(kind="error", prompt_id=pid, node=str(data.get("node_id") or ""),
                          message=_execution_error(data))  # fmt: skip
    if kind == "execution_interrupted":
        return ImageEvent(kind="interrupted", prompt_id=pid, node=str(data.get("node_id") or ""))
    return None


def _execution_error(d: Mapping[str, Any]) -> str:
    where = f"{d.get('node_type') or 'a node'} (node {d.get('node_id')})"
    what = f"{d.get('exception_type') or 'error'}: {d.get('exception_message') or ''}".strip()
    return f"{where} failed: {what}".rstrip(": ")


def history_result(entry: Mapping[str, Any]) -> tuple[str, str, list[OutputRef]]:
    """A `/history/{id}` entry -> (state, message, images): succeeded, failed, cancelled,
    or running when it is not complete yet."""
    status = entry.get("status")
    outputs = entry.get("outputs")
    refs = outputs_from_wire(outputs if isinstance(outputs, dict) else {})
    if isinstance(status, dict):
        msgs = status.get("messages") or []
        for m in msgs:
            if isinstance(m, list) and len(m) == 2 and isinstance(m[1], dict):
                if m[0] == "execution_interrupted":
                    return "cancelled", "interrupted", refs
                if m[0] == "execution_error":
                    return "failed", _execution_error(m[1]), refs
        if status.get("status_str") == "error":
            return "failed", "the workflow failed", refs
        if not status.get("completed", True):
            return "running", "", refs
    return "succeeded", "", refs


def outputs_from_wire(outputs: Mapping[str, Any]) -> list[OutputRef]:
    """Images in a history entry's outputs, saved ones first (previews only if none)."""
    refs: list[OutputRef] = []
    for nid in sorted(outputs, key=_order):
        out = outputs[nid]
        images = out.get("images") if isinstance(out, dict) else None
        refs += [
            OutputRef(
                filename=im["filename"],
                subfolder=str(im.get("subfolder") or ""),
                type=str(im.get("type") or "output"),
                node=str(nid),
            )
            for im in images or []
            if isinstance(im, dict) and isinstance(im.get("filename"), str)
        ]
    saved = [r for r in refs if r.type == "output"]
    return saved or refs


def queue_ids(obj: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """`/queue` -> (running prompt ids, pending prompt ids)."""

    def ids(items: object) -> list[str]:
        seq = items if isinstance(items, list) else []
        return [i[1] for i in seq if isinstance(i, list) and len(i) > 1 and isinstance(i[1], str)]

    return ids(obj.get("queue_running")), ids(obj.get("queue_pending"))


def devices_from_stats(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`/system_stats` -> the devices with their memory, as /health shows them."""
    keys = ("name", "type", "vram_total", "vram_free")
    return [{k: d.get(k) for k in keys} for d in obj.get("devices") or [] if isinstance(d, dict)]
