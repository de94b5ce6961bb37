"""The written contract (OpenAPI 3.1) and the reference receiver agree; TLS is verified."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from openapi_spec_validator import validate

from gateway.store.db import Database
from gateway.tools.seed_db import add_samples
from sync.client import Outcome, UpstreamClient, classify
from sync.outbox import read_batch
from sync.receiver.app import make_app
from sync.streams import TELEMETRY_SPEC
from tests.sync.synckit import TOKEN, RunningReceiver, make_test_ca

SPEC_PATH = Path(__file__).resolve().parents[2] / "sync" / "openapi.yaml"


def load_spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    return spec


def test_openapi_document_is_valid_including_the_config_schema_it_references() -> None:
    spec = load_spec()
    assert spec["openapi"].startswith("3.1")
    validate(spec, base_uri=SPEC_PATH.as_uri())


def test_the_receiver_implements_exactly_the_documented_gateway_endpoints() -> None:
    documented = {(method.upper(), path) for path, ops in load_spec()["paths"].items() for method in ops}
    app = make_app("postgresql://unused", TOKEN)
    served = {(r.method, r.resource.canonical) for r in app.router.routes()
              if r.resource is not None and r.resource.canonical.startswith("/v1/") and r.method != "HEAD"}
    assert served == documented


def test_the_client_calls_only_documented_paths() -> None:
    source = (SPEC_PATH.parent / "client.py").read_text(encoding="utf-8")
    called = set(re.findall(r'self\._url\(([^)]*)\)', source))
    templates = {"\"streams\", stream, \"batches\"": "/v1/gateways/{gateway_id}/streams/{stream}/batches",
                 "\"config\"": "/v1/gateways/{gateway_id}/config",
                 "\"commands\", \"pending\"": "/v1/gateways/{gateway_id}/commands/pending",
                 "\"commands\", cmd_id, \"claim\"": "/v1/gateways/{gateway_id}/commands/{cmd_id}/claim",
                 "\"generations\", generation, \"streams\"":
                     "/v1/gateways/{gateway_id}/generations/{generation}/streams"}
    assert called == set(templates)
    assert set(templates.values()) == set(load_spec()["paths"])


async def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_the_receiver_answers_broken_requests_as_documented(
    gw_db: Database, receiver: RunningReceiver
) -> None:
    add_samples(gw_db.path, 5)
    gw = receiver.gateway
    batch = await read_batch(gw_db, TELEMETRY_SPEC, gw, 0, generation=gw_db.generation, max_rows=5, max_bytes=10**6)
    assert batch is not None
    url = f"{receiver.url}/v1/gateways/{gw}/streams/telemetry/batches"
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Encoding": "gzip", "Content-Type": "application/json"}

    status, doc = await _post(url, batch.body, {**auth, "Authorization": "Bearer nope", "Idempotency-Key": batch.key})
    assert status == 401
    status, doc = await _post(url, batch.body, auth)
    assert (status, doc["error"]) == (400, "Idempotency-Key header is required")
    status, doc = await _post(url, batch.body, {**auth, "Idempotency-Key": f"{gw}:telemetry:1-4"})
    assert status == 422 and "Idempotency-Key must be" in doc["problems"][0]
    raw = json.loads(gzip.decompress(batch.body))
    raw["items"][2]["value"] = "7.1"
    status, doc = await _post(url, gzip.compress(json.dumps(raw).encode()), {**auth, "Idempotency-Key": batch.key})
    assert status == 422 and doc["problems"] == ["seq 3: value must be a finite number"]
    status, doc = await _post(url.replace("telemetry", "weather"), batch.body, {**auth, "Idempotency-Key": batch.key})
    assert status == 404
    deep = gzip.compress(b"[" * 100_000)
    status, doc = await _post(url, deep, {**auth, "Idempotency-Key": batch.key})
    assert (status, doc["error"]) == (400, "body is nested too deeply")
    status, doc = await _post(url, batch.body, {**auth, "Idempotency-Key": batch.key})
    assert status == 201 and doc == {"stored": 5, "inserted": 5, "first_seq": 1, "last_seq": 5, "duplicate": False}
    status, doc = await _post(url, batch.body, {**auth, "Idempotency-Key": batch.key})
    assert status == 200 and doc["duplicate"] is True


async def test_tls_is_verified_and_a_private_ca_file_is_honoured(
    gw_db: Database, postgres_dsn: str, gateway_id: str, tmp_path: Path
) -> None:
    ca_file, server_ctx = make_test_ca(tmp_path)
    receiver = RunningReceiver(postgres_dsn, gateway_id, ssl_context=server_ctx)
    await receiver.start()
    try:
        add_samples(gw_db.path, 3)
        batch = await read_batch(gw_db, TELEMETRY_SPEC, gateway_id, 0, generation=gw_db.generation, max_rows=3,
                                 max_bytes=10**6)
        assert batch is not None and receiver.url.startswith("https://")
        async with UpstreamClient(receiver.url, TOKEN, gateway_id) as untrusting:
            refused = await untrusting.post_batch("telemetry", batch.body, batch.key)
        assert refused.outcome is Outcome.RETRY and "CERTIFICATE_VERIFY_FAILED" in refused.detail
        async with UpstreamClient(receiver.url, TOKEN, gateway_id, ca_file=ca_file) as trusting:
            stored = await trusting.post_batch("telemetry", batch.body, batch.key)
        assert stored.outcome is Outcome.STORED
        assert await receiver.seqs("telemetry") == [1, 2, 3]
    finally:
        await receiver.close()


@pytest.mark.parametrize(("status", "outcome"), [
    (200, Outcome.STORED), (201, Outcome.STORED), (408, Outcome.RETRY), (429, Outcome.RETRY),
    (500, Outcome.RETRY), (503, Outcome.RETRY), (413, Outcome.TOO_LARGE), (400, Outcome.REJECTED),
    (409, Outcome.CONFLICT), (422, Outcome.REJECTED), (401, Outcome.DENIED), (403, Outcome.DENIED),
    (404, Outcome.DENIED),
])
def test_status_codes_map_to_the_documented_behaviour(status: int, outcome: Outcome) -> None:
    assert classify(status) is outcome
