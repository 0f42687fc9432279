from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cloudmatrix.errors import ConfigError
from cloudmatrix.workload.rng import stream
from cloudmatrix.workload.spec import ArrivalSpec, LengthSpec, WorkloadSpec, generate
from cloudmatrix.workload.trace import read_trace

DATA = Path(__file__).resolve().parents[1] / "data"


def test_length_distributions() -> None:
    rng = stream(1, "t")
    assert set(LengthSpec(kind="fixed", value=4096).sample(rng, 10)) == {4096}
    normal = LengthSpec(kind="normal", mean=2000, std=100).sample(rng, 20000)
    assert normal.mean() == pytest.approx(2000, rel=0.01)
    logn = LengthSpec(kind="lognormal", mean=1000, std=500).sample(rng, 50000)
    assert logn.mean() == pytest.approx(1000, rel=0.02) and logn.std() == pytest.approx(500, rel=0.05)
    uni = LengthSpec(kind="uniform", low=10, high=20).sample(rng, 1000)
    assert uni.min() >= 10 and uni.max() <= 20


def test_arrivals_rate_and_burstiness() -> None:
    t = ArrivalSpec(kind="poisson", rate_per_s=50).times(stream(0, "a"), 20000)
    assert 20000 / t[-1] == pytest.approx(50, rel=0.03)
    gaps = np.diff(ArrivalSpec(kind="gamma", rate_per_s=50, cv=3).times(stream(0, "b"), 50000))
    assert gaps.std() / gaps.mean() == pytest.approx(3, rel=0.1)


def test_spec_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match="mean"):
        LengthSpec(kind="normal", std=1)
    with pytest.raises(ValidationError, match="concurrency"):
        ArrivalSpec(kind="closed")


@settings(max_examples=50, deadline=None)
@given(mean=st.floats(1, 10000), std=st.floats(0, 5000), cap=st.integers(1, 20000), seed=st.integers(0, 99))
def test_sampled_lengths_are_positive_and_capped(mean, std, cap, seed) -> None:
    for kind in ("normal", "lognormal"):
        out = LengthSpec(kind=kind, mean=mean, std=std, max=cap).sample(stream(seed, kind), 200)
        assert out.min() >= 1 and out.max() <= cap


def test_same_seed_same_workload() -> None:
    spec = WorkloadSpec(input=LengthSpec(kind="normal", mean=1000, std=200))
    a, b = generate(spec, 3, 100), generate(spec, 3, 100)
    assert np.array_equal(a.input_len, b.input_len) and np.array_equal(a.arrival_s, b.arrival_s)
    assert not np.array_equal(a.input_len, generate(spec, 4, 100).input_len)


def test_trace_formats() -> None:
    jl = read_trace(DATA / "mooncake_sample.jsonl")
    assert len(jl.input_len) == 300 and jl.hash_ids is not None and len(jl.hash_ids[0]) >= 3
    csv = read_trace(DATA / "sample_trace.csv")
    assert len(csv.input_len) == 40 and csv.hash_ids is None
    assert np.array_equal(csv.input_len, jl.input_len[:40])
    assert csv.timestamp_s[0] == pytest.approx(0.223)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"timestamp": 0, "input_length": 10, "output_length": 5}\n{"timestamp": 5, "input_length": 10}\n',
            "line 2: missing field 'output_length'",
        ),
        ('{"timestamp": 0, "input_length": 10, "output_length": 5}\n{oops\n', "line 2: not valid JSON"),
        ('{"timestamp": 0, "input_length": "ten", "output_length": 5}\n', "line 1: timestamp, input_length"),
        ('{"timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": [1, "a"]}\n', "line 1: hash_ids"),
        (
            '{"timestamp": 9, "input_length": 10, "output_length": 5}\n{"timestamp": 1, "input_length": 1, '
            '"output_length": 1}\n',
            "backwards",
        ),
    ],
)
def test_malformed_trace_lines(tmp_path, content, message) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        read_trace(path)


def test_malformed_csv_line(tmp_path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("timestamp,input_length,output_length\n0,10,5\n1,,5\n")
    with pytest.raises(ConfigError, match="line 3: missing field 'input_length'"):
        read_trace(path)
