"""Live requests reach the EMS context cache: prompt text -> chained block hashes -> prefix hits that
shorten the second prefill of a repeated prompt."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from cloudmatrix.emulator.text import CHARS_PER_TOKEN, chat_text, prefix_block_hashes
from cloudmatrix.serving.requests import State
from cloudmatrix.sim.engine import Simulation
from cloudmatrix.sim.scenario import load_scenario
from cloudmatrix.workload.spec import Workload

BLOCK = 512
SIZE = BLOCK * CHARS_PER_TOKEN


@given(shared=st.integers(0, 3), tail_a=st.text(min_size=1, max_size=50), tail_b=st.text(min_size=1, max_size=50))
def test_hashes_agree_exactly_on_shared_whole_blocks(shared: int, tail_a: str, tail_b: str) -> None:
    head = "".join(chr(97 + i % 26) for i in range(shared * SIZE))
    a, b = prefix_block_hashes(head + "A" + tail_a, BLOCK), prefix_block_hashes(head + "B" + tail_b, BLOCK)
    assert a[:shared] == b[:shared]
    assert a[shared] != b[shared]
    assert len(a) == -(-len(head + "A" + tail_a) // SIZE)


def test_chat_text_is_stable() -> None:
    msgs = [("system", "be brief"), ("user", "hello")]
    assert chat_text(msgs) == chat_text(list(msgs)) != chat_text([("user", "be brief"), ("user", "hello")])


def test_repeated_prompt_hits_the_cache_and_prefills_faster() -> None:
    sc = load_scenario("cm384-ems", ["workload.reuse=null"])
    empty = Workload(input_len=np.zeros(0, np.int64), output_len=np.zeros(0, np.int64), arrival_s=None)
    sim = Simulation(sc, workload=empty)
    text = "lorem ipsum " * 1400  # 4,200 tokens: eight whole 512-token blocks and a partial one
    tokens = len(text) // CHARS_PER_TOKEN
    first = sim.submit(tokens, 8, prefix_block_hashes(text, sim.ems.block_tokens))
    sim.env.run(until=30.0)
    second = sim.submit(tokens, 8, prefix_block_hashes(text, sim.ems.block_tokens))
    sim.env.run(until=60.0)
    t = sim.table
    assert t.state[first] == t.state[second] == State.DONE
    prefill = t.prefill_end_s - t.prefill_start_s
    assert prefill[second] < 0.5 * prefill[first]
    stats = sim.ems.stats()
    assert stats["dram_hit_blocks"] == 9  # the identical prompt hits all of them; its last token is computed
    assert stats["token_hit_rate"] == (tokens - 1) / (2 * tokens)
