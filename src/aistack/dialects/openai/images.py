"""OpenAI's images API <-> the hub's image values, and the job resource aistack adds.

`POST /v1/images/generations` (and `/v1/images/edits`, multipart) decode into an
`ImageRequest`: OpenAI's fields (`model`, `prompt`, `n`, `size`, `quality`, `style`,
`response_format`, `user`) plus `negative_prompt`, `seed`, `steps` and `cfg`, which
diffusion workflows take. `size` is `WIDTHxHEIGHT` (multiples of 8) or `auto`, the
workflow's own size. The answer is OpenAI's `{"created", "data": [{"b64_json"|"url"}]}`.

A job (`/v1/images/jobs`) is shown as `{"id", "object": "image.job", "status", ...,
"progress", "data"}`, its images always by URL. Everything here is pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from aistack.core.errors import invalid
from aistack.core.images import ImageRequest, InputImage, public_state
from aistack.dialects._fields import body_object, opt_float, opt_int, opt_str, wrong_type

MAX_N = 10
MAX_PROMPT = 32_000
MIN_SIDE, MAX_SIDE = 64, 4096
_SIZE = re.compile(r"^\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*$")
_FORMATS = ("b64_json", "url")


def size_from_wire(v: object) -> tuple[int | None, int | None]:
    if v is None or v == "auto":
        return None, None
    if not isinstance(v, str):
        raise wrong_type("size", "a string", v)
    m = _SIZE.match(v)
    if m is None:
        raise invalid(f"invalid size '{v}': use WIDTHxHEIGHT (for example 1024x1024) or auto",
                      "size")  # fmt: skip
    w, h = int(m.group(1)), int(m.group(2))
    for side in (w, h):
        if not MIN_SIDE <= side <= MAX_SIDE or side % 8:
            raise invalid(
                f"invalid size '{v}': each side must be a multiple of 8 from {MIN_SIDE} to "
                f"{MAX_SIDE}",
                "size",
            )
    return w, h


def _fields(b: Mapping[str, Any], *, default_format: str) -> dict[str, Any]:
    prompt = b.get("prompt")
    if prompt is None or prompt == "":
        raise invalid("prompt is required", "prompt")
    if not isinstance(prompt, str):
        raise wrong_type("prompt", "a string", prompt)
    if len(prompt) > MAX_PROMPT:
        raise invalid(f"prompt is too long: {len(prompt)} characters, at most {MAX_PROMPT}",
                      "prompt")  # fmt: skip
    model = opt_str(b, "model") or ""
    n = opt_int(b, "n")
    if n is not None and not 1 <= n <= MAX_N:
        raise invalid(f"invalid n {n}: must be from 1 to {MAX_N}", "n")
    width, height = size_from_wire(b.get("size"))
    fmt = opt_str(b, "response_format") or default_format
    if fmt not in _FORMATS:
        raise invalid(f"invalid response_format '{fmt}': use b64_json or url", "response_format")
    if b.get("stream") is True:
        raise invalid(
            "streamed image generation is not supported: create a job (POST /v1/images/jobs) "
            "and follow GET /v1/images/jobs/{id}/events",
            "stream",
        )
    seed = opt_int(b, "seed")
    if seed is not None and not 0 <= seed < 2**63:
        raise invalid("invalid seed: must be a non-negative integer", "seed")
    steps = opt_int(b, "steps")
    if steps is not None and not 1 <= steps <= 200:
        raise invalid(f"invalid steps {steps}: must be from 1 to 200", "steps")
    cfg = opt_float(b, "cfg")
    if cfg is None:
        cfg = opt_float(b, "cfg_scale")
    if cfg is not None and not 0 <= cfg <= 100:
        raise invalid(f"invalid cfg {cfg}: must be from 0 to 100", "cfg")
    return {
        "model": model,
        "prompt": prompt,
        "negative_prompt": opt_str(b, "negative_prompt") or "",
        "n": n or 1,
        "width": width,
        "height": height,
        "seed": seed,
        "steps": steps,
        "cfg": cfg,
        "quality": opt_str(b, "quality") or "",
        "style": opt_str(b, "style") or "",
        "response_format": fmt,
        "user": opt_str(b, "user") or "",
    }


def image_request_from_wire(body: object, default_format: str = "b64_json") -> ImageRequest:
    """`POST /v1/images/generations` (and `/v1/images/jobs`) -> an ImageRequest."""
    b = body_object(body)
    return ImageRequest(**_fields(b, default_format=default_format))


def edit_request_from_form(
    form: Mapping[str, str],
    image: tuple[str, bytes, str] | None,
    default_format: str = "b64_json",
) -> ImageRequest:
    """`POST /v1/images/edits` (multipart: text fields, and the `image` file as
    (filename, bytes, content type)) -> an ImageRequest with its input image."""
    if image is None or not image[1]:
        raise invalid("image is required: send it as a multipart file field 'image'", "image")
    b: dict[str, Any] = dict(form)
    for key in ("n", "seed", "steps"):
        if key in b:
            b[key] = _form_number(b[key], key, int)
    if "cfg" in b:
        b["cfg"] = _form_number(b["cfg"], "cfg", float)
    filename, data, mime = image
    return ImageRequest(
        **_fields(b, default_format=default_format),
        image=InputImage(data=data, filename=filename or "input.png", mime=mime or "image/png"),
    )


def _form_number(v: str, key: str, kind: type[int] | type[float]) -> int | float:
    try:
        return kind(v)
    except ValueError:
        raise invalid(f"invalid {key} '{v}': expected a number", key) from None


def images_response_to_wire(
    created: int, items: Sequence[tuple[str, str]], size: str, extra: Mapping[str, Any]
) -> dict[str, Any]:
    """OpenAI's answer; items are ("b64_json" | "url", value)."""
    out: dict[str, Any] = {
        "created": created,
        "data": [{kind: value} for kind, value in items],
        "output_format": "png",
    }
    if size != "auto":
        out["size"] = size
    out.update(extra)
    return out


def job_to_wire(
    job: Mapping[str, Any],
    files: Sequence[Mapping[str, Any]],
    position: int | None,
) -> dict[str, Any]:
    """A job as `/v1/images/jobs/{id}` shows it. `job` is a job row as a mapping
    (JobRecord fields), `files` its images with their `url`."""
    p: Mapping[str, Any] = job.get("params") or {}
    w, h = p.get("width"), p.get("height")
    value, mx = int(job.get("progress_value") or 0), int(job.get("progress_max") or 0)
    state = public_state(str(job.get("state")))
    out: dict[str, Any] = {
        "id": job["id"],
        "object": "image.job",
        "created_at": int(job["created_at"]) // 1000,
        "status": state,
        "model": job.get("model"),
        "prompt": p.get("prompt", ""),
        "negative_prompt": p.get("negative_prompt") or None,
        "n": p.get("n", 1),
        "size": f"{w}x{h}" if w and h else "auto",
        "seed": job.get("seed"),
        "steps": p.get("steps"),
        "queue_position": position,
        "progress": {
            "value": value,
            "max": mx,
            "node": job.get("progress_node") or None,
            "fraction": round(value / mx, 4) if mx else (1.0 if state == "succeeded" else 0.0),
        },
        "backend": job.get("backend") or None,
        "error": {"message": job["error"]} if job.get("error") else None,
        "started_at": _sec(job.get("started_at")),
        "finished_at": _sec(job.get("finished_at")),
        "gpu_seconds": round(float(job.get("gpu_ms") or 0) / 1000, 3),
        "data": [dict(f) for f in files],
    }
    if job.get("app"):
        out["app"] = job["app"]
    return out


def _sec(ms: object) -> int | None:
    return int(ms) // 1000 if isinstance(ms, int) and ms else None


def jobs_to_wire(jobs: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": jobs,
        "has_more": has_more,
        "first_id": jobs[0]["id"] if jobs else None,
        "last_id": jobs[-1]["id"] if jobs else None,
    }


def parse_multipart(
    body: bytes, content_type: str
) -> tuple[dict[str, str], dict[str, tuple[str, bytes, str]]]:
    """multipart/form-data -> (text fields, files as (filename, bytes, content type))."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.lower().startswith("multipart/form-data") or m is None:
        raise invalid("expected a multipart/form-data body (an image file and fields)")
    sep = b"--" + m.group(1).encode("latin-1")
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, bytes, str]] = {}
    parts = body.split(sep)
    if len(parts) < 2:
        raise invalid("malformed multipart body: no parts")
    for part in parts[1:]:
        if part.startswith(b"--"):
            break
        part = part[2:] if part.startswith(b"\r\n") else part
        head, found, data = part.partition(b"\r\n\r\n")
        if not found:
            raise invalid("malformed multipart body: a part has no headers")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        disp = headers.get("content-disposition", "")
        name = _param(disp, "name")
        if not name:
            continue
        filename = _param(disp, "filename")
        if filename is not None:
            files[name.removesuffix("[]")] = (filename, data, headers.get("content-type", ""))
        else:
            fields[name] = data.decode("utf-8", "replace")
    return fields, files


def _param(header: str, key: str) -> str | None:
    m = re.search(rf'(?:^|;)\s*{key}="([^"]*)"', header) or re.search(
        rf"(?:^|;)\s*{key}=([^;]*)", header
    )
    return m.group(1).strip() if m else None
