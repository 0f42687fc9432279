"""`serve` as vLLM users drive it: served model names (the official openai client against the Hugging Face
id), vLLM's /version, /ping, /tokenize and /detokenize, output lengths that follow the scenario's distribution
with a simulated end-of-sequence (ignore_eos and min_tokens as vLLM's), and logprobs refused by name."""

from collections.abc import Iterator

import httpx
import openai
import pytest

from .conftest import API_KEY, Server, start_server

HF_ID = "deepseek-ai/DeepSeek-R1"
LOW, HIGH = 2, 30  # the scenario's output lengths: uniform on [LOW, HIGH]
LENGTHS = (
    "--set",
    "workload.output.kind=uniform",
    "--set",
    f"workload.output.low={LOW}",
    "--set",
    f"workload.output.high={HIGH}",
)


def _start() -> Server:
    return start_server(
        "--api-key", API_KEY, "--speed", "50", "--served-model-name", HF_ID, "--served-model-name", "r1", *LENGTHS
    )


@pytest.fixture(scope="module")
def named() -> Iterator[Server]:
    server = _start()
    yield server
    server.proc.terminate()
    server.proc.wait(timeout=15)


def _post(server: Server, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)


def _lengths(server: Server, n: int) -> list[tuple[int, str]]:
    out = []
    for _ in range(n):
        r = _post(server, "/v1/completions", {"model": HF_ID, "prompt": "hello", "max_tokens": 1000})
        assert r.status_code == 200, r.text
        body = r.json()
        out.append((body["usage"]["completion_tokens"], body["choices"][0]["finish_reason"]))
    return out


def test_the_openai_client_against_the_served_names(named: Server) -> None:
    client = openai.OpenAI(base_url=f"{named.url}/v1", api_key=API_KEY, max_retries=0)
    cards = client.models.list().data
    assert [m.id for m in cards] == [HF_ID, "r1"] and {m.model_extra["root"] for m in cards} == {"deepseek-r1"}
    chat = client.chat.completions.create(model=HF_ID, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert chat.model == HF_ID and chat.usage.completion_tokens <= 4
    streamed = client.completions.create(model="r1", prompt="hello", max_tokens=3, stream=True)
    assert {c.model for c in streamed} == {"r1"}
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="deepseek-r1", messages=[{"role": "user", "content": "hi"}])


def test_output_lengths_follow_the_scenario_with_a_simulated_eos(named: Server) -> None:
    got = _lengths(named, 24)
    lengths = [n for n, _ in got]
    assert all(LOW <= n <= HIGH for n in lengths) and len(set(lengths)) >= 6, lengths
    assert {reason for _, reason in got} == {"stop"}
    # a cap below the draw ends the completion at the cap, as "length"
    capped = _post(named, "/v1/completions", {"model": HF_ID, "prompt": "x", "max_tokens": 1}).json()
    assert capped["usage"]["completion_tokens"] == 1 and capped["choices"][0]["finish_reason"] == "length"


def test_ignore_eos_and_min_tokens(named: Server) -> None:
    body = {"model": HF_ID, "prompt": "x", "max_tokens": HIGH + 20}
    full = _post(named, "/v1/completions", body | {"ignore_eos": True}).json()
    assert full["usage"]["completion_tokens"] == HIGH + 20 and full["choices"][0]["finish_reason"] == "length"
    for _ in range(5):
        late = _post(named, "/v1/completions", body | {"min_tokens": HIGH + 5}).json()
        assert late["usage"]["completion_tokens"] == HIGH + 5 and late["choices"][0]["finish_reason"] == "stop"
    over = _post(named, "/v1/completions", body | {"min_tokens": HIGH + 21})
    assert over.status_code == 400 and over.json()["error"]["param"] == "min_tokens"
    chat = {"model": HF_ID, "messages": [{"role": "user", "content": "hi"}], "stream": True, "ignore_eos": True}
    with httpx.stream(
        "POST",
        f"{named.url}/v1/chat/completions",
        json=chat | {"max_tokens": 7},
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as r:
        finals = [line for line in r.iter_lines() if '"finish_reason": "length"' in line]
    assert len(finals) == 1


def test_lengths_are_seeded() -> None:
    """A fresh server replays the same lengths for the same arrival order."""
    runs = []
    for _ in range(2):
        server = _start()
        try:
            runs.append(_lengths(server, 6))
        finally:
            server.proc.terminate()
            server.proc.wait(timeout=15)
    assert runs[0] == runs[1]


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        ("/v1/chat/completions", "logprobs", True),
        ("/v1/chat/completions", "top_logprobs", 2),
        ("/v1/completions", "logprobs", 0),
        ("/v1/completions", "prompt_logprobs", 1),
    ],
)
def test_logprobs_are_refused_by_name(named: Server, path: str, field: str, value: object) -> None:
    body = {"model": HF_ID, "max_tokens": 2, field: value}
    body |= {"messages": [{"role": "user", "content": "hi"}]} if "chat" in path else {"prompt": "hi"}
    r = _post(named, path, body)
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == field and error["code"] == "logprobs_not_supported"
    assert _post(named, path, body | {field: None}).status_code == 200  # null: not asked


def test_version_ping_tokenize_detokenize(named: Server) -> None:
    assert named.get("/version").json()["version"]
    for method in ("GET", "POST"):
        r = httpx.request(method, f"{named.url}/ping", headers={"Authorization": f"Bearer {API_KEY}"})
        assert r.status_code == 200
    tok = _post(named, "/tokenize", {"model": HF_ID, "prompt": "abcdefghij", "return_token_strs": True}).json()
    assert tok["count"] == 3 and len(tok["tokens"]) == 3 and tok["token_strs"] == ["abcd", "efgh", "ij"]
    assert tok["max_model_len"] > 1000 and all(isinstance(i, int) and i >= 0 for i in tok["tokens"])
    again = _post(named, "/tokenize", {"prompt": "abcdefghij"}).json()  # model optional, as in vLLM
    assert again["tokens"] == tok["tokens"] and "token_strs" not in again
    chat = _post(named, "/tokenize", {"messages": [{"role": "user", "content": "abcdefgh"}]}).json()
    assert chat["count"] == 2 + 3 + 3  # as a chat prompt is charged: framing per message and reply priming
    bad = _post(named, "/tokenize", {"model": "other", "prompt": "a"})
    assert bad.status_code == 404 and bad.json()["error"]["param"] == "model"
    both = _post(named, "/tokenize", {"prompt": "a", "messages": [{"role": "user", "content": "b"}]})
    assert both.status_code == 400
    de = _post(named, "/detokenize", {"tokens": tok["tokens"]})
    assert de.status_code == 400 and de.json()["error"]["code"] == "no_tokenizer" and "--tokenizer" in de.text


def test_tokenize_and_detokenize_with_a_tokenizer(tmp_path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(tmp_path / "words.json"))
    server = start_server("--api-key", API_KEY, "--tokenizer", str(tmp_path / "words.json"))
    try:
        tok_reply = _post(server, "/tokenize", {"prompt": "hello world hello"}).json()
        assert tok_reply["tokens"] == [1, 2, 1] and tok_reply["count"] == 3
        assert _post(server, "/detokenize", {"tokens": [1, 2, 0]}).json() == {"prompt": "hello world [UNK]"}
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=15)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/tokenize", {"prompt": 5}),
        ("/tokenize", {"messages": []}),
        ("/tokenize", {}),
        ("/tokenize", {"prompt": "a", "return_token_strs": "maybe"}),
        ("/detokenize", {"tokens": ["a"]}),
        ("/detokenize", {"tokens": [-1, 2**70]}),
        ("/detokenize", {}),
        ("/tokenize", [1, 2]),
    ],
)
def test_bad_tokenize_bodies_are_400s(named: Server, path: str, body: object) -> None:
    r = _post(named, path, body)
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}, r.text


def test_simulated_ids_are_stable_and_in_the_vocabulary() -> None:
    from cloudmatrix.emulator.vllm_api import simulated_ids

    text = "naïve 東京😀 " * 50
    ids = simulated_ids(text, 1000)
    assert ids == simulated_ids(text, 1000) and len(ids) == -(-len(text) // 4) and all(0 <= i < 1000 for i in ids)
    assert simulated_ids("abcd" * 2, 10**6)[0] == simulated_ids("abcd" * 2, 10**6)[1] != simulated_ids("abce", 10**6)[0]
