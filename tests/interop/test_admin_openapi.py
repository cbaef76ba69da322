"""The admin API's OpenAPI document, checked by a third-party validator (openapi-spec-validator)
as served by a running gateway; and every documented operation answering real requests with
a status its document lists and a body its schema accepts (bad input included)."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import httpx
import pytest

from conftest import demo_upstream, gateway_config

TOKEN = "interop-admin-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def admin(pki, mcpgate, tmp_path: Path):
    port = free_port()
    config = gateway_config(pki, {"local": demo_upstream()["upstream"]})
    config["admin"] = {"listen": f"127.0.0.1:{port}", "tokens": [TOKEN]}
    mcpgate(config, env={"MCPGATE_DATA_DIR": str(tmp_path / "data")})
    ctx = ssl.create_default_context(cafile=str(pki.server_ca))
    with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ctx, timeout=20) as client:
        yield client


def test_the_served_document_is_valid_openapi(admin: httpx.Client) -> None:
    from openapi_spec_validator import validate
    from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

    response = admin.get("/admin/openapi.json")
    assert response.status_code == 200, response.text
    document = response.json()
    try:
        validate(document)
    except OpenAPIValidationError as e:
        pytest.fail(f"/admin/openapi.json is not valid OpenAPI: {e}")
    assert document["openapi"].startswith("3.1")


def test_answers_match_the_document(admin: httpx.Client) -> None:
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    document = admin.get("/admin/openapi.json").json()
    registry = Registry().with_resource("urn:admin", Resource.from_contents(document, default_specification=DRAFT202012))

    def check(method: str, template: str, response: httpx.Response) -> None:
        operation = document["paths"][template][method.lower()]
        status = str(response.status_code)
        documented = operation["responses"]
        assert status in documented or "default" in documented, (
            f"{method} {template} answered {status}, which its document does not list: {response.text}"
        )
        assert response.status_code < 500, f"{method} {template}: {response.text}"
        spec = documented.get(status, documented.get("default"))
        if "$ref" in spec:
            spec = document["components"]["responses"][spec["$ref"].rsplit("/", 1)[1]]
        schema = spec.get("content", {}).get("application/json", {}).get("schema")
        if schema is None:
            return
        body = response.json()
        errors = [e.message for e in Draft202012Validator(
            _absolute_refs(schema), registry=registry).iter_errors(body)]
        assert not errors, f"{method} {template} {status}: {errors} in {body}"

    auth = {"Authorization": f"Bearer {TOKEN}"}
    seen: set[tuple[str, str]] = set()

    def call(method: str, template: str, path: str, **kw) -> httpx.Response:
        r = admin.request(method, path, **kw)
        check(method, template, r)
        seen.add((method.lower(), template))
        return r

    s = "/admin/servers"
    one = "/admin/servers/{name}"
    call("GET", "/admin/openapi.json", "/admin/openapi.json")
    assert call("GET", s, s).status_code == 401
    assert call("GET", s, s, headers=auth).status_code == 200
    assert call("POST", s, s, headers=auth, content=b"{not json").status_code == 400
    assert call("POST", s, s, headers=auth, json={"name": "x"}).status_code == 400
    assert call("POST", s, s, headers=auth, json={"name": "bad__name", "command": "true"}).status_code == 400
    assert call("POST", s, s, headers=auth, json={"name": "py", "command": "true"}).status_code == 201
    assert call("POST", s, s, headers=auth, json={"name": "py", "command": "true"}).status_code == 409
    assert call("GET", one, f"{s}/py", headers=auth).status_code == 200
    assert call("GET", one, f"{s}/missing", headers=auth).status_code == 404
    assert call("PUT", one, f"{s}/py", headers=auth, json={"command": "true", "args": ["a"]}).status_code == 200
    assert call("PUT", one, f"{s}/py", headers=auth, json={"url": 7}).status_code == 400
    assert call("POST", one + "/test", f"{s}/py/test", headers=auth).status_code == 200
    assert call("GET", one + "/tls", f"{s}/py/tls", headers=auth).status_code == 200
    assert call("POST", one + "/trust", f"{s}/py/trust", headers=auth, json={}).status_code == 400
    assert call("POST", one + "/trust", f"{s}/py/trust", headers=auth,
                json={"fingerprint": "AB" * 32}).status_code == 409
    assert call("DELETE", one, f"{s}/local", headers=auth).status_code == 409
    assert call("DELETE", one, f"{s}/py", headers=auth).status_code == 200
    assert call("DELETE", one, f"{s}/py", headers=auth).status_code == 404

    operations = {(m, p) for p, item in document["paths"].items() for m in item if m != "parameters"}
    assert operations <= seen, f"operations not exercised: {sorted(operations - seen)}"


def _absolute_refs(node):
    """The document's local `#/...` references, made absolute against `urn:admin`."""
    if isinstance(node, dict):
        return {k: (f"urn:admin{v}" if k == "$ref" and isinstance(v, str) and v.startswith("#")
                    else _absolute_refs(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_absolute_refs(v) for v in node]
    return node
