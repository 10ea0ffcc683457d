"""The image wire, pure: OpenAI's images requests, ComfyUI workflows and bindings, events.

Table-driven where the shape repeats: each bad request gets its 400 naming the field;
bindings are found in the built-in graph, in an SDXL-style export with titles, and in
a model-free graph; ComfyUI's messages and history entries become core events.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from aistack.backends.comfyui import load_workflow
from aistack.core.errors import GatewayError
from aistack.core.images import ImageRequest, can_move, public_state
from aistack.dialects import comfyui as wire
from aistack.dialects.openai import images as oa

# What ComfyUI's "Save (API Format)" writes for an SDXL base + refiner-less graph.
SDXL: dict[str, Any] = {
    "4": {"class_type": "CheckpointLoaderSimple",
          "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"},
          "_meta": {"title": "Load Checkpoint"}},
    "5": {"class_type": "EmptyLatentImage",
          "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "beautiful scenery", "clip": ["4", 1]},
          "_meta": {"title": "CLIP Text Encode (Prompt)"}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]},
          "_meta": {"title": "CLIP Text Encode (Negative)"}},
    "10": {"class_type": "KSamplerAdvanced", "inputs": {
        "add_noise": "enable", "noise_seed": 42, "steps": 25, "cfg": 8, "sampler_name": "euler",
        "scheduler": "normal", "start_at_step": 0, "end_at_step": 20,
        "return_with_leftover_noise": "enable", "model": ["4", 0], "positive": ["6", 0],
        "negative": ["7", 0], "latent_image": ["5", 0]}},
    "17": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["4", 2]}},
    "19": {"class_type": "SaveImage",
           "inputs": {"filename_prefix": "ComfyUI", "images": ["17", 0]}},
}  # fmt: skip

EMPTY: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                                 "color": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "images": ["1", 0]}},
}  # fmt: skip


def req(**kw: Any) -> ImageRequest:
    base: dict[str, Any] = {"model": "m", "prompt": "a fox"}
    base.update(kw)
    return ImageRequest(**base)


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        (wire.BUILTIN_TXT2IMG, {
            "prompt": (("6", "text"),), "negative_prompt": (("7", "text"),),
            "width": (("5", "width"),), "height": (("5", "height"),), "n": (("5", "batch_size"),),
            "seed": (("3", "seed"),), "steps": (("3", "steps"),), "cfg": (("3", "cfg"),),
            "checkpoint": (("4", "ckpt_name"),),
        }),
        (SDXL, {
            "prompt": (("6", "text"),), "negative_prompt": (("7", "text"),),
            "width": (("5", "width"),), "height": (("5", "height"),), "n": (("5", "batch_size"),),
            "seed": (("10", "noise_seed"),), "steps": (("10", "steps"),), "cfg": (("10", "cfg"),),
            "checkpoint": (("4", "ckpt_name"),),
        }),
        (EMPTY, {"width": (("1", "width"),), "height": (("1", "height"),),
                 "n": (("1", "batch_size"),)}),
    ],
    ids=["builtin", "sdxl-advanced", "model-free"],
)  # fmt: skip
def test_bindings_are_discovered_from_the_graph(graph: dict[str, Any], expected: Any) -> None:
    assert wire.discover(graph) == expected


def test_the_prompt_is_found_by_title_when_no_sampler_links_to_it() -> None:
    g = copy.deepcopy(SDXL)
    del g["10"]
    g["17"]["inputs"]["samples"] = ["5", 0]
    found = wire.discover(g)
    assert found["prompt"] == (("6", "text"),) and found["negative_prompt"] == (("7", "text"),)


def test_binding_fills_every_knob_and_keeps_the_template_untouched() -> None:
    before = copy.deepcopy(SDXL)
    b = wire.merge_bindings(SDXL, wire.parse_bindings({"seed": ["10.noise_seed"]}, SDXL, "t"))
    g = wire.bind(SDXL, b, req(prompt="a cat", negative_prompt="dogs", width=512, height=768,
                                n=3, steps=4, cfg=2.5), seed=7, checkpoint="other.safetensors",
                  prefix="aistack/j1")  # fmt: skip
    assert before == SDXL
    assert g["6"]["inputs"]["text"] == "a cat" and g["7"]["inputs"]["text"] == "dogs"
    assert g["5"]["inputs"] == {"width": 512, "height": 768, "batch_size": 3}
    assert (g["10"]["inputs"]["noise_seed"], g["10"]["inputs"]["steps"]) == (7, 4)
    assert g["10"]["inputs"]["cfg"] == 2.5
    assert g["4"]["inputs"]["ckpt_name"] == "other.safetensors"
    assert g["19"]["inputs"]["filename_prefix"] == "aistack/j1"
    # Unset knobs keep the workflow's values.
    g2 = wire.bind(SDXL, b, req(), seed=1)
    assert g2["5"]["inputs"]["width"] == 1024 and g2["7"]["inputs"]["text"] == "text, watermark"


@pytest.mark.parametrize(
    ("graph", "request_kw", "image", "param"),
    [
        (EMPTY, {}, False, "prompt"),
        ({**SDXL, "5": {"class_type": "LatentUpscale", "inputs": {"width": 8, "height": 8,
                                                                  "samples": ["x", 0]}}},
         {"n": 2}, False, "n"),
        (SDXL, {}, True, "image"),
        ({**SDXL, "30": {"class_type": "LoadImage", "inputs": {"image": "in.png"}}}, {}, False,
         "image"),
    ],
    ids=["no-prompt-input", "no-batch", "no-image-input", "needs-an-image"],
)  # fmt: skip
def test_what_a_workflow_has_no_place_for_is_a_400(
    graph: dict[str, Any], request_kw: dict[str, Any], image: bool, param: str
) -> None:
    b = wire.discover(graph)
    with pytest.raises(GatewayError) as e:
        wire.check_request(b, req(**request_kw), image)
    assert e.value.status == 400 and e.value.param == param


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"prompt": "6"}, "must be 'node_id.input'"),
        ({"prompt": "99.text"}, "no node '99'"),
        ({"prompt": "6.txt"}, "has no input 'txt'"),
        ({"sampler": "10.sampler_name"}, "unknown"),
    ],
)
def test_bad_bindings_stop_startup_naming_the_file(spec: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as e:
        wire.parse_bindings(spec, SDXL, "wf.json")
    assert str(e.value).startswith("wf.json: bindings.")


def test_workflow_files_are_checked_when_loaded(tmp_path: Path) -> None:
    ok = tmp_path / "sdxl.json"
    ok.write_text(json.dumps(SDXL))
    wf = load_workflow("sdxl", ok, {})
    assert wf.describe()["inputs"] == sorted(wire.discover(SDXL))
    assert wf.describe()["defaults"]["width"] == 1024
    cases = {
        "ui.json": {"nodes": [], "links": []},
        "noout.json": {k: v for k, v in SDXL.items() if k != "19"},
        "notjson.json": None,
    }
    for name, content in cases.items():
        p = tmp_path / name
        p.write_text("{" if content is None else json.dumps(content))
        with pytest.raises(ValueError, match=str(p)):
            load_workflow("x", p, {})
    with pytest.raises(ValueError, match="cannot read"):
        load_workflow("x", tmp_path / "missing.json", {})


@pytest.mark.parametrize(
    ("obj", "files"),
    [
        ({"CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": [["a.safetensors",
                                                                          "sub/b.ckpt"]]}}}},
         ["a.safetensors", "sub/b.ckpt"]),
        ({"CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": [
            "COMBO", {"options": ["c.safetensors"]}]}}}}, ["c.safetensors"]),
        ({}, []),
    ],
    ids=["list", "combo", "none"],
)  # fmt: skip
def test_checkpoints_come_from_object_info_in_both_shapes(obj: Any, files: list[str]) -> None:
    assert wire.checkpoints_from_object_info(obj) == files
    assert [wire.model_name(f) for f in files] == [f.rsplit("/", 1)[-1].rsplit(".", 1)[0]
                                                   for f in files]  # fmt: skip


@pytest.mark.parametrize(
    ("msg", "kind", "extra"),
    [
        ({"type": "execution_start", "data": {"prompt_id": "p"}}, "started", {}),
        ({"type": "executing", "data": {"node": "3", "prompt_id": "p"}}, "node", {"node": "3"}),
        ({"type": "executing", "data": {"node": None, "prompt_id": "p"}}, "done", {}),
        ({"type": "progress", "data": {"value": 2, "max": 4, "node": "3", "prompt_id": "p"}},
         "progress", {"value": 2, "max": 4}),
        ({"type": "execution_error", "data": {"prompt_id": "p", "node_id": "4",
                                              "node_type": "KSampler", "exception_type": "OOM",
                                              "exception_message": "out of memory"}},
         "error", {"message": "KSampler (node 4) failed: OOM: out of memory"}),
        ({"type": "execution_interrupted", "data": {"prompt_id": "p", "node_id": "3"}},
         "interrupted", {}),
    ],
)  # fmt: skip
def test_comfyui_messages_become_events(msg: dict[str, Any], kind: str, extra: Any) -> None:
    ev = wire.event_from_wire(msg)
    assert ev is not None and ev.kind == kind and ev.prompt_id == "p"
    for k, v in extra.items():
        assert getattr(ev, k) == v


@pytest.mark.parametrize(
    "msg",
    [
        {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}},
        {"type": "progress_state", "data": {"prompt_id": "p", "nodes": {}}},
        {"type": "progress", "data": {"value": "x", "max": 4, "prompt_id": "p"}},
        {"type": "executing", "data": "nonsense"},
    ],
)
def test_other_messages_are_ignored(msg: dict[str, Any]) -> None:
    assert wire.event_from_wire(msg) is None


def test_history_entries_give_the_outcome_and_the_saved_images() -> None:
    images = {"images": [{"filename": "a_00001_.png", "subfolder": "aistack", "type": "output"}]}
    preview = {"images": [{"filename": "p.png", "subfolder": "", "type": "temp"}]}
    ok = {"outputs": {"19": images, "20": preview},
          "status": {"status_str": "success", "completed": True, "messages": []}}  # fmt: skip
    state, _, refs = wire.history_result(ok)
    assert state == "succeeded" and [(r.filename, r.subfolder, r.node) for r in refs] == [
        ("a_00001_.png", "aistack", "19")
    ]
    err = {"outputs": {}, "status": {"status_str": "error", "completed": False, "messages": [
        ["execution_error", {"node_id": "3", "node_type": "KSampler", "exception_type": "E",
                             "exception_message": "boom"}]]}}  # fmt: skip
    assert wire.history_result(err)[:2] == ("failed", "KSampler (node 3) failed: E: boom")
    stopped = {"status": {"messages": [["execution_interrupted", {"node_id": "3"}]]}}
    assert wire.history_result(stopped)[0] == "cancelled"
    assert wire.history_result({"outputs": {"2": preview}})[2][0].type == "temp"


def test_a_refused_prompt_names_the_nodes() -> None:
    body = {
        "error": {"type": "prompt_outputs_failed_validation",
                  "message": "Prompt outputs failed validation", "details": ""},
        "node_errors": {"4": {"class_type": "CheckpointLoaderSimple", "errors": [
            {"message": "Value not in list", "details": "ckpt_name: 'x' not in []"}]}},
    }  # fmt: skip
    msg = wire.prompt_error(body)
    assert msg.startswith("Prompt outputs failed validation; node 4 (CheckpointLoaderSimple)")
    assert "ckpt_name: 'x' not in []" in msg


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({}, "prompt", "prompt is required"),
        ({"prompt": 5}, "prompt", "expected a string"),
        ({"prompt": "x" * 32_001}, "prompt", "too long"),
        ({"prompt": "x", "n": 0}, "n", "from 1 to 10"),
        ({"prompt": "x", "n": "2"}, "n", "expected an integer"),
        ({"prompt": "x", "size": "big"}, "size", "WIDTHxHEIGHT"),
        ({"prompt": "x", "size": "1000x1001"}, "size", "multiple of 8"),
        ({"prompt": "x", "size": "32x32"}, "size", "from 64"),
        ({"prompt": "x", "response_format": "png"}, "response_format", "b64_json or url"),
        ({"prompt": "x", "stream": True}, "stream", "/v1/images/jobs"),
        ({"prompt": "x", "seed": -1}, "seed", "non-negative"),
        ({"prompt": "x", "steps": 0}, "steps", "from 1 to 200"),
        ({"prompt": "x", "cfg": "high"}, "cfg", "expected a number"),
    ],
)
def test_bad_image_requests_get_a_400_naming_the_field(
    body: dict[str, Any], param: str, words: str
) -> None:
    with pytest.raises(GatewayError) as e:
        oa.image_request_from_wire(body)
    assert e.value.status == 400 and e.value.param == param and words in e.value.message


def test_a_good_request_carries_openai_fields_and_the_diffusion_extras() -> None:
    r = oa.image_request_from_wire(
        {"model": "sdxl", "prompt": "a fox", "n": 2, "size": "512x768", "quality": "hd",
         "style": "natural", "response_format": "url", "user": "ann", "negative_prompt": "blur",
         "seed": 3, "steps": 9, "cfg_scale": 4, "background": "auto"}
    )  # fmt: skip
    assert (r.model, r.n, r.width, r.height, r.response_format) == ("sdxl", 2, 512, 768, "url")
    assert (r.negative_prompt, r.seed, r.steps, r.cfg, r.quality) == ("blur", 3, 9, 4.0, "hd")
    auto = oa.image_request_from_wire({"prompt": "x", "size": "auto"})
    assert (auto.width, auto.height, auto.size, auto.response_format) == (None, None, "auto",
                                                                           "b64_json")  # fmt: skip
    assert ImageRequest.from_params("sdxl", r.params()) == r


def test_an_edit_comes_as_multipart_with_its_image() -> None:
    boundary = "XyZ"
    body = (
        (
            f'--{boundary}\r\ncontent-disposition: form-data; name="prompt"\r\n\r\nadd a hat\r\n'
            f'--{boundary}\r\ncontent-disposition: form-data; name="n"\r\n\r\n2\r\n'
            f'--{boundary}\r\ncontent-disposition: form-data; name="image[]"; '
            f'filename="cat.png"\r\ncontent-type: image/png\r\n\r\n'
        ).encode()
        + b"\x89PNG\r\n\x1a\nDATA\r\n--"
        + boundary.encode()
        + b"--\r\n"
    )
    fields, files = oa.parse_multipart(body, f"multipart/form-data; boundary={boundary}")
    assert fields == {"prompt": "add a hat", "n": "2"}
    r = oa.edit_request_from_form(fields, files.get("image"))
    assert r.n == 2 and r.image is not None and r.image.data == b"\x89PNG\r\n\x1a\nDATA"
    with pytest.raises(GatewayError, match="image is required"):
        oa.edit_request_from_form(fields, None)
    with pytest.raises(GatewayError, match="multipart"):
        oa.parse_multipart(b"{}", "application/json")
    with pytest.raises(GatewayError, match="invalid n"):
        oa.edit_request_from_form({"prompt": "x", "n": "two"}, ("a.png", b"x", ""))


def test_job_states_move_only_forward_and_submitted_reads_as_queued() -> None:
    assert can_move("queued", "submitted") and can_move("running", "queued")
    assert not can_move("succeeded", "running") and not can_move("queued", "running")
    assert public_state("submitted") == "queued" and public_state("running") == "running"
