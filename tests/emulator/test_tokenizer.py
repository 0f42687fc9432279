"""`serve --tokenizer` against hostile tokenizer.json files: refused at load when the probe set fails, a 400
when only some prompts fail (a panic, an error, a run past the time bound), never a 500; the file's truncation
and padding are off; tokenising a huge prompt in a worker process leaves the event loop to other clients."""

import asyncio
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

from cloudmatrix.emulator import tokenizer_worker
from cloudmatrix.emulator.text import HFTokens, Measured, prefix_block_hashes
from cloudmatrix.emulator.tokenizer_worker import TokenizerFailed, TokenizerPool
from cloudmatrix.errors import ConfigError
from tests.emulator.conftest import API_KEY, _serve

AUTH = {"Authorization": f"Bearer {API_KEY}"}
WORDS = {"[UNK]": 0, "hello": 1, "world": 2, "[PAD]": 3}


def _word_level(vocab: dict[str, int], *split: pre_tokenizers.PreTokenizer, unk: str = "[UNK]") -> Tokenizer:
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), *split])
    return tok


def _backtracking(letter: str, end: str) -> pre_tokenizers.PreTokenizer:
    """A Split whose regex backtracks exponentially on a run of ``letter`` not followed by ``end``."""
    return pre_tokenizers.Split(Regex(f"({letter}+)+{end}"), "isolated")


def _save(tok: Tokenizer, path: Path) -> Path:
    tok.save(str(path))
    return path


def _measure(pool: TokenizerPool, *texts: str, block_tokens: int = 4) -> list[Measured | TokenizerFailed]:
    """Each text measured in turn: its counts and block keys, or how the tokenizer failed."""

    async def one(text: str) -> Measured | TokenizerFailed:
        try:
            return await pool.measure([text], text, block_tokens)
        except TokenizerFailed as e:
            return e

    async def run() -> list[Measured | TokenizerFailed]:
        return [await one(t) for t in texts]

    return asyncio.run(run())


@pytest.fixture(scope="module")
def q_panics(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Passes every probe, but its regex gives up (a Rust panic) on a run of 26+ q's not ending in z."""
    return _save(_word_level(WORDS, _backtracking("q", "$")), tmp_path_factory.mktemp("tok") / "q-panics.json")


@pytest.fixture(scope="module")
def q_slow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Passes every probe, but each run of 22 q's then y costs ~0.1-0.3 s of backtracking (below onig's limit)."""
    tok = _word_level(WORDS, pre_tokenizers.Split(Regex("(q+)+z|y"), "isolated"))
    return _save(tok, tmp_path_factory.mktemp("tok") / "q-slow.json")


def test_files_that_fail_the_probe_set_are_refused_with_one_line(tmp_path: Path) -> None:
    hostile = {
        "unk-missing": _word_level({"hello": 0, "world": 1}),  # [UNK] is not in the vocabulary
        "empty-wordlevel": _word_level({}),
        "empty-bpe": Tokenizer(models.BPE({}, [])),  # every prompt would count as 1 token
        "redos": _word_level(WORDS, _backtracking("a", "$")),  # 'aaa...a!' panics
    }
    paths = {name: _save(tok, tmp_path / f"{name}.json") for name, tok in hostile.items()}
    runs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "cloudmatrix.cli.app", "serve", "--port", "1", "--tokenizer", str(path)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, path in paths.items()
    }
    for name, proc in runs.items():
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2 and "Traceback" not in err, (name, err)
        assert len(err.strip().splitlines()) == 1 and str(paths[name]) in err, (name, err)


def test_what_failed_is_named(tmp_path: Path) -> None:
    unk = _save(_word_level({"hello": 0}), tmp_path / "unk.json")
    with pytest.raises(ConfigError, match=r"unk\.json: cannot encode a probe prompt .*Missing \[UNK\]"):
        TokenizerPool(unk, workers=1)
    redos = _save(_word_level(WORDS, _backtracking("a", "$")), tmp_path / "redos.json")
    with pytest.raises(ConfigError, match=r"redos\.json: cannot encode a probe prompt \('a' \* 10000 \+ '!'\)"):
        TokenizerPool(redos, workers=1)
    empty = _save(Tokenizer(models.BPE({}, [])), tmp_path / "empty.json")
    with pytest.raises(ConfigError, match=r"empty\.json: encodes a probe prompt of several words .* at most 1 token"):
        TokenizerPool(empty, workers=1)


def test_a_probe_past_the_time_bound_is_refused(q_slow: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokenizer_worker, "BASE_TIMEOUT_S", 1.0)
    monkeypatch.setattr(tokenizer_worker, "PROBES", (("q runs", ("q" * 22 + "y") * 200),))
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"q-slow\.json: cannot encode a probe prompt \(q runs\): encoding took"):
        TokenizerPool(q_slow, workers=1)
    assert time.monotonic() - start < 30  # one bound (1 s plus the per-character share), not the ~40 s run


def test_a_prompt_that_panics_or_runs_too_long_fails_alone(
    q_panics: Path, q_slow: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = TokenizerPool(q_panics, workers=1)
    try:
        failed, fine = _measure(pool, "q" * 40 + "x", "hello world hello")
        assert isinstance(failed, TokenizerFailed) and "retry-limit" in str(failed)
        assert isinstance(fine, Measured) and fine.counts == [3]
    finally:
        pool.close()
    monkeypatch.setattr(tokenizer_worker, "BASE_TIMEOUT_S", 1.0)
    pool = TokenizerPool(q_slow, workers=1)
    try:
        start = time.monotonic()
        failed, fine = _measure(pool, ("q" * 22 + "y") * 200, "hello world")  # the whole first one: ~40 s
        assert time.monotonic() - start < 10.0  # its bound (1.05 s), a new worker's start (~1-3 s), the second
        assert re.fullmatch(r"encoding took longer than 1\.\d s; its worker is restarted", str(failed)), failed
        assert isinstance(fine, Measured) and fine.counts == [2]  # from the fresh worker
    finally:
        pool.close()


def test_the_server_answers_400_and_keeps_answering(q_panics: Path) -> None:
    server = next(_serve("--tokenizer", str(q_panics)))
    try:
        for path, prompt in (("/v1/completions", "prompt"), ("/v1/chat/completions", "messages")):
            for text, status in (("q" * 41 + "x", 400), ("hello world hello", 200)):
                content = text if prompt == "prompt" else [{"role": "user", "content": text}]
                body = {"model": "deepseek-r1", prompt: content, "max_tokens": 1}
                r = httpx.post(f"{server.url}{path}", headers=AUTH, json=body, timeout=30)
                assert r.status_code == status, r.text
                if status == 400:
                    error = r.json()["error"]
                    assert error["type"] == "invalid_request_error" and error["param"] == prompt
                    assert "tokenizer q-panics.json" in error["message"] and error["code"] == "tokenizer_failed"
                else:
                    assert r.json()["usage"]["prompt_tokens"] == (3 if prompt == "prompt" else 3 + 3 + 3)
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=15)


@pytest.fixture(scope="module")
def truncating_and_padding(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    truncating = _word_level(WORDS)
    truncating.enable_truncation(max_length=1)
    padding = _word_level(WORDS)
    padding.enable_padding(length=64, pad_id=3, pad_token="[PAD]")
    folder = tmp_path_factory.mktemp("tok")
    return [_save(truncating, folder / "truncating.json"), _save(padding, folder / "padding.json")]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(st.sampled_from(["hello", "world", "other", "東京", "🚀"]), min_size=1, max_size=200))
def test_truncation_and_padding_in_the_file_are_off(truncating_and_padding: list[Path], words: list[str]) -> None:
    for path in truncating_and_padding:
        assert HFTokens(path).count(" ".join(words)) == len(words)


def test_the_pool_counts_and_hashes_as_the_tokenizer_does(truncating_and_padding: list[Path]) -> None:
    path = truncating_and_padding[0]
    pool = TokenizerPool(path, workers=1)
    try:
        texts = ["hello", "hello world " * 300, "other 東京 " * 50, "", "  \n\t "]
        for text, got in zip(texts, _measure(pool, *texts, block_tokens=16), strict=True):
            assert isinstance(got, Measured)
            assert got.counts == [HFTokens(path).count(text)]
            assert got.prefix_hashes() == prefix_block_hashes(text, 16, HFTokens(path))
        assert texts[1].split() == ["hello", "world"] * 300 and HFTokens(path).count(texts[1]) == 600
    finally:
        pool.close()


def test_cached_tokens_are_whole_blocks_of_token_ids(truncating_and_padding: list[Path]) -> None:
    server = next(_serve("cm384-ems", "--speed", "20", "--tokenizer", str(truncating_and_padding[1])))
    try:
        first, second = "hello world " * 1000, "hello world " * 800 + "world hello " * 200  # 1,600 tokens shared
        usage = [
            httpx.post(
                f"{server.url}/v1/completions",
                headers=AUTH,
                json={"model": "deepseek-r1", "prompt": prompt, "max_tokens": 2},
                timeout=60,
            ).json()["usage"]
            for prompt in (first, second)
        ]
        assert [u["prompt_tokens"] for u in usage] == [2000, 2000]
        # the 3 whole 512-token blocks the prompts share (in characters they would share 4 blocks of 2,048)
        assert [u["prompt_tokens_details"]["cached_tokens"] for u in usage] == [0, 3 * 512]
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=15)


@pytest.fixture(scope="module")
def bpe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A small byte-level BPE: many merges per word, so a multi-megabyte prompt takes seconds to encode."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    corpus = [f"the quick brown fox jumps over the lazy dog {i} times, 東京 " for i in range(2000)]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, initial_alphabet=alphabet, show_progress=False))
    yield _save(tok, tmp_path_factory.mktemp("tok") / "bpe.json")


def _latency(client: httpx.Client, body: dict) -> float:
    start = time.monotonic()
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    return time.monotonic() - start


def test_a_huge_prompt_does_not_stall_other_clients(bpe: Path) -> None:
    server = next(_serve("--tokenizer", str(bpe)))
    try:
        words = ("alpha", "quick", "brown", "zebra", "東京", "lazy")
        huge = " ".join(f"{words[i % 6]}{i % 97}" for i in range(350_000))[:3_000_000]  # < the 4 MiB body limit
        big: dict[str, float] = {}

        def send_huge() -> None:
            start = time.monotonic()
            body = {"model": "deepseek-r1", "prompt": huge, "max_tokens": 1}
            r = httpx.post(f"{server.url}/v1/completions", headers=AUTH, json=body, timeout=120)
            big["seconds"], big["end"] = time.monotonic() - start, time.monotonic()
            big["tokenised"] = r.json()["error"]["code"] == "context_length_exceeded"  # ~1.8M tokens: counted

        small = {"model": "deepseek-r1", "prompt": "the quick brown fox", "max_tokens": 1}
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as client:
            idle = _latency(client, small)
            thread = threading.Thread(target=send_huge)
            thread.start()
            time.sleep(1.0)  # the huge body is read and handed to a worker
            latency, small_end = _latency(client, small), time.monotonic()
            thread.join(timeout=120)
        assert big["tokenised"], big
        assert big["end"] > small_end + 0.5, big  # the huge prompt was still tokenising meanwhile
        assert latency < 0.5, latency
        print(f"huge prompt {big['seconds']:.2f} s; small request {latency * 1000:.0f} ms ({idle * 1000:.0f} ms alone)")
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=15)
