"""`serve --faults` against the official openai client at a high --speed (issue 27): a stream the fault cuts
ends with an error event, a request during the recovery gets 503 with Retry-After, and service resumes when
the simulation says. Tolerance: the resume time to within 0.5 wall s (client and HTTP overhead, and
Retry-After's whole seconds)."""

import contextlib
import math
import time
from pathlib import Path

import openai
import pytest

from .conftest import API_KEY, start_server

SPEED = 25.0
FAULT_AT_S = 150.0  # simulated: 6 wall s after the server's clock starts
RESTART_S = 2.0 + 0.057 + 87.04  # the restart's priced pause on the paper's decode instance (docs/faults.md)


@pytest.fixture
def faulty_server(tmp_path: Path):
    faults = tmp_path / "faults.yaml"
    faults.write_text(
        f"faults:\n  events: [{{at_s: {FAULT_AT_S}, kind: die_loss, target: decode.0.die.17}}]\n  policy: restart\n"
    )
    server = start_server("--api-key", API_KEY, "--speed", str(SPEED), "--faults", str(faults))
    yield server
    server.proc.terminate()
    server.proc.wait(timeout=15)


def _sim_now(server, client: openai.OpenAI) -> float:
    """The simulated clock (a request brings the server's simulation up to the wall clock first)."""
    with contextlib.suppress(openai.InternalServerError):  # recovering: the 503 advanced the clock all the same
        client.completions.create(model="deepseek-r1", prompt="a", max_tokens=1)
    return server.get("/v1/cloudmatrix/stats").json()["sim_time_s"]


def test_a_cut_stream_errors_then_503_until_the_restart_ends(faulty_server) -> None:
    server = faulty_server
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)
    assert _sim_now(server, client) < FAULT_AT_S - 50  # the stream below starts well before the fault
    stream = client.chat.completions.create(
        model="deepseek-r1",
        max_tokens=30_000,  # ~15-25 ms a token simulated: it runs past the fault
        stream=True,
        messages=[{"role": "user", "content": "z" * 400}],
        extra_body={"ignore_eos": True},
    )
    got = 0
    with pytest.raises(openai.APIError, match="simulated fault"):
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                got += len(chunk.choices[0].delta.content.split())
    assert 0 < got < 30_000
    with pytest.raises(openai.InternalServerError) as refused:
        client.completions.create(model="deepseek-r1", prompt="abcd", max_tokens=4)
    assert refused.value.status_code == 503 and "recovering" in str(refused.value)
    left = (FAULT_AT_S + RESTART_S - _sim_now(server, client)) / SPEED  # wall seconds to the simulated resume
    assert left > 0.5
    assert abs(int(refused.value.response.headers["Retry-After"]) - math.ceil(left)) <= 1
    time.sleep(left - 0.5)
    with pytest.raises(openai.InternalServerError):  # still recovering half a second before the end
        client.completions.create(model="deepseek-r1", prompt="abcd", max_tokens=4)
    time.sleep(1.0)
    done = client.completions.create(model="deepseek-r1", prompt="abcd", max_tokens=4)
    assert done.usage.completion_tokens == 4
