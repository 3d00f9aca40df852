"""The web server's guards: Host/Origin checks (DNS rebinding), the login rate limit, and no API
schema in the pages; on a real Gradio server over HTTP and on the middleware alone."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import gradio as gr
import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import launch
from app.security import LoginLimiter, allowed_host_names, guard_middleware, host_allowed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A small Gradio app with a login, served like ``launch.py serve --auth u:secret`` does."""
    with gr.Blocks() as demo:
        box = gr.Textbox()
        box.submit(lambda s: s.upper(), box, box, api_name="shout")
    port = _free_port()
    demo.queue().launch(
        server_name="127.0.0.1", server_port=port, auth=[("u", "secret")], prevent_thread_lock=True,
        quiet=True, ssr_mode=False, app_kwargs={"middleware": guard_middleware("127.0.0.1", login=True)},
    )
    yield f"http://127.0.0.1:{port}"
    demo.close()


def test_a_foreign_host_header_is_refused(server: str) -> None:
    assert httpx.get(server + "/", headers={"Host": "attacker.example"}).status_code == 403
    assert httpx.get(server + "/config", headers={"Host": "attacker.example:7860"}).status_code == 403
    assert httpx.get(server + "/", headers={"Origin": "http://attacker.example"}).status_code == 403
    assert httpx.get(server + "/").status_code == 200
    local = {"Host": "localhost:1234", "Origin": "http://127.0.0.1"}
    assert httpx.get(server + "/", headers=local).status_code == 200


def test_the_login_page_embeds_no_api_schema(server: str) -> None:
    page = httpx.get(server + "/").text
    assert "window.gradio_api_info" in page  # the page still defines it, empty
    assert "shout" not in page and "named_endpoints\":{}" in page.replace(" ", "")


def test_wrong_passwords_are_rate_limited(server: str) -> None:
    client = httpx.Client(base_url=server)
    codes = [client.post("/login", data={"username": "u", "password": f"wrong{i}"}).status_code
             for i in range(7)]
    assert codes[:5] == [400] * 5 and codes[5:] == [429, 429]
    assert client.post("/login", data={"username": "u", "password": "secret"}).status_code == 429  # locked


def test_login_limiter_forgets_old_failures_and_unlocks() -> None:
    now = [0.0]

    async def login(request):
        ok = (await request.form()).get("password") == "pw"
        return PlainTextResponse("ok" if ok else "no", status_code=200 if ok else 400)

    inner = Starlette(routes=[Route("/login", login, methods=["POST"])])
    client = TestClient(LoginLimiter(inner, max_failures=3, window_s=60, lockout_s=30, clock=lambda: now[0]))
    for _ in range(2):
        assert client.post("/login", data={"password": "x"}).status_code == 400
    now[0] = 61.0  # the first two fell out of the window
    assert [client.post("/login", data={"password": "x"}).status_code for _ in range(3)] == [400, 400, 400]
    assert client.post("/login", data={"password": "pw"}).status_code == 429
    now[0] = 92.0
    assert client.post("/login", data={"password": "pw"}).status_code == 200


def test_concurrent_wrong_passwords_get_no_more_tries_than_sequential_ones() -> None:
    # 1,000 concurrent wrong passwords were all checked, and the right one sent last accepted.
    import asyncio

    checked: list[str] = []

    async def login(scope, receive, send) -> None:
        body = (await receive())["body"]
        checked.append(body.decode())
        await asyncio.sleep(0.01)  # the password check takes a moment
        ok = body == b"pw"
        await send({"type": "http.response.start", "status": 200 if ok else 400, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    limiter = LoginLimiter(login, max_failures=5, window_s=60, lockout_s=30)

    async def attempt(password: str) -> int:
        sent: list[int] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": password.encode(), "more_body": False}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                sent.append(message["status"])

        scope = {"type": "http", "method": "POST", "path": "/login", "client": ("10.0.0.9", 5000)}
        await limiter(scope, receive, send)
        return sent[0]

    async def burst() -> list[int]:
        return await asyncio.gather(*(attempt("guess") for _ in range(1000)), attempt("pw"))

    statuses = asyncio.run(burst())
    assert len(checked) <= 5 and statuses.count(400) == len(checked)
    assert statuses[-1] == 429 and statuses.count(429) == len(statuses) - len(checked)


def test_allowed_hosts() -> None:
    allowed = allowed_host_names("127.0.0.1", ["studio.lab.org,.corp.example"])
    for ok in ("localhost", "127.0.0.1", "::1", "studio.lab.org", "a.corp.example", "corp.example"):
        assert host_allowed(ok, allowed), ok
    for bad in ("attacker.example", "studio.lab.org.evil", "xcorp.example", "192.168.1.5"):
        assert not host_allowed(bad, allowed), bad
    assert "myhost" in allowed_host_names("myhost")
    assert host_allowed("anything", allowed_host_names("127.0.0.1", ["*"]))


def test_serve_takes_import_roots_and_allowed_hosts(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def fake_launch(studio, host, port, auth, middleware):
        seen.update(roots=studio.import_roots, middleware=middleware, auth=auth)

    import app.ui

    monkeypatch.setattr(app.ui, "launch", fake_launch)
    monkeypatch.setattr("jobs.consumers.start_embedded_consumer", lambda studio, compute: type(
        "C", (), {"stop": lambda self: None})())
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.setenv("SLRNET_IMPORT_ROOTS", str(tmp_path / "b"))
    monkeypatch.delenv("SLRNET_AUTH", raising=False)
    code = launch.main(["serve", "--data", str(tmp_path / "data"), "--import-root", str(tmp_path / "a"),
                        "--allowed-hosts", "studio.lab.org"])
    assert code == 0
    assert seen["roots"] == ((tmp_path / "a").resolve(), (tmp_path / "b").resolve())
    assert [m.cls.__name__ for m in seen["middleware"]] == ["HostGuard", "ApiInfoStripper"]
    assert "studio.lab.org" in seen["middleware"][0].kwargs["allowed"]
