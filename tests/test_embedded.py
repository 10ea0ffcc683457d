"""The embedded engine: generation off the event loop, load and unload on request."""

from __future__ import annotations

import threading

import httpx
import ollama

from tests.conftest import LOCAL_MODEL


def test_the_server_answers_while_the_model_computes(gw_url: str) -> None:
    done = threading.Event()
    events: list[str] = []

    def long_generation() -> None:
        with httpx.stream(
            "POST",
            f"{gw_url}/api/generate",
            json={
                "model": LOCAL_MODEL,
                "prompt": "Tell a long story.",
                "options": {"num_predict": 200},
            },
            timeout=120,
        ) as r:
            for line in r.iter_lines():
                if '"done":false' in line and not events:
                    events.append("generating")
        events.append("generation done")
        done.set()

    t = threading.Thread(target=long_generation)
    t.start()
    while not events and t.is_alive():
        threading.Event().wait(0.01)
    for _ in range(5):
        assert httpx.get(f"{gw_url}/api/version", timeout=10).status_code == 200
        assert httpx.get(f"{gw_url}/api/tags", timeout=10).status_code == 200
        events.append("answered")
    t.join(120)
    assert events[0] == "generating"
    assert events.index("answered") < events.index("generation done")


def test_keep_alive_zero_unloads_and_the_next_request_loads_again(gw_url: str) -> None:
    client = ollama.Client(host=gw_url, timeout=60)
    r = client.generate(LOCAL_MODEL, "", keep_alive=0)
    assert r.done_reason == "unload"
    assert LOCAL_MODEL not in [m.model for m in client.ps().models]
    r = client.generate(LOCAL_MODEL, "Hi", options={"num_predict": 4})
    assert r.response
    assert LOCAL_MODEL in [m.model for m in client.ps().models]


def test_chat_with_no_messages_loads_the_model(gw_url: str) -> None:
    r = httpx.post(f"{gw_url}/api/chat", json={"model": LOCAL_MODEL, "messages": []}, timeout=60)
    lines = r.text.splitlines()
    final = httpx.Response(200, content=lines[-1]).json()
    assert final["done"] and final["done_reason"] == "load"
    assert final["message"] == {"role": "assistant", "content": ""}
