"""POST /api/zones/{zone}/commands: an admin sends a command to a node or a gateway relay."""

from __future__ import annotations

from aiohttp import web

from gateway.commands import CommandRefused
from gateway.web.auth import require_admin
from gateway.web.context import gw
from gateway.web.jsonbody import read_json


async def post_command(request: web.Request) -> web.Response:
    """Body {"channel", "cmd", "params"?, "node_uid"?, "cmd_id"?} → 202 {"cmd_id", "status", "command"}."""
    g = gw(request)
    require_admin(request)
    body = await read_json(request)
    problems = command_problems(body)
    if problems or not isinstance(body, dict):
        return web.json_response({"error": "invalid command", "problems": problems}, status=422)
    try:
        record = await g.commands.submit(
            request.match_info["zone"],
            body["channel"],
            body["cmd"],
            body.get("params") or {},
            node_uid=body.get("node_uid"),
            source="api",
            cmd_id=body.get("cmd_id"),
        )
    except CommandRefused as exc:
        return web.json_response(
            {"error": "refused", "reason": exc.reason, "cmd_id": exc.cmd_id}, status=exc.http_status
        )
    return web.json_response({"cmd_id": record["cmd_id"], "status": record["status"], "command": record}, status=202)


def command_problems(body: object) -> list[str]:
    """Shape problems of a command body, one line each (empty when it is fine)."""
    if not isinstance(body, dict):
        return ["body must be a JSON object"]
    problems = []
    for key in ("channel", "cmd"):
        value = body.get(key)
        if not isinstance(value, str) or not value or len(value) > 64:
            problems.append(f"{key}: required string (1..64 chars)")
    if "params" in body and not isinstance(body["params"], dict):
        problems.append("params: must be an object")
    for key in ("node_uid", "cmd_id"):
        if key in body and not (isinstance(body[key], str) and 0 < len(body[key]) <= 64):
            problems.append(f"{key}: must be a string (1..64 chars)")
    return problems


def add_routes(app: web.Application) -> None:
    """Register the command endpoint."""
    app.router.add_post("/api/zones/{zone}/commands", post_command)
