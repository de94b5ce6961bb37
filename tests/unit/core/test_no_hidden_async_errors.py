"""The suite's guard against hidden async bugs: loop errors and leaked sockets fail the test that caused them."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

LEAKY_TESTS = '''
import asyncio
import socket


async def test_task_exception_never_retrieved():
    async def boom():
        raise ValueError("lost in a task nobody awaited")

    task = asyncio.create_task(boom())
    await asyncio.sleep(0.01)
    del task


async def test_socket_left_open_in_a_reference_cycle():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    cycle = [sock]
    cycle.append(cycle)


async def test_well_behaved():
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
    assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
'''


def test_loop_errors_and_leaked_sockets_fail_the_test_that_caused_them(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The inner pytest runs in a subprocess from a temporary directory: it finds the project's tests package
    # through PYTHONPATH (set or not by whoever started the suite).
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest("from tests.conftest import no_hidden_async_errors, pytest_configure  # noqa: F401\n")
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
                     "filterwarnings =\n    error\n")
    pytester.makepyfile(test_leaky=LEAKY_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines([
        "*ERROR at teardown of test_task_exception_never_retrieved*",
        "*Task exception was never retrieved*",
        "*ERROR at teardown of test_socket_left_open_in_a_reference_cycle*",
        "*ResourceWarning: unclosed <socket.socket*",
    ])
