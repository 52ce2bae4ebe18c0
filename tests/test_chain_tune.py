"""tools/chain_tune.py's search (descend) on made-up timings: it finds the fastest tiles where
layers interact, keeps the current tiles unless beaten by the margin, never takes a refused
candidate, and the trigger pass leaves the last layer alone.  The timing itself runs on a GPU
(tests/test_gpu.py checks that setting tiles keeps the answers)."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import chain_tune  # noqa: E402


def tiles(*bps):
    return [{"BP": b, "SPLIT": 1} for b in bps]


CANDS = [[{"BP": b, "SPLIT": 1} for b in (4, 8, 16)] for _ in range(3)]


def test_descend_finds_the_fastest_chain_where_layers_interact():
    # layer 1 alone is best at BP 4, but with layer 0 at BP 16 its BP 16 is faster still
    def cost(ts):
        bp = [t["BP"] for t in ts]
        c = [{4: 3.0, 8: 2.0, 16: 1.0}[bp[0]], {4: 1.0, 8: 2.0, 16: 3.0}[bp[1]], {4: 2.0, 8: 1.0, 16: 2.0}[bp[2]]]
        if bp[0] == 16 and bp[1] == 16:
            c[1] = 0.2
        return sum(c)
    got = chain_tune.descend(tiles(4, 4, 4), CANDS, cost, rounds=3, log=lambda s: None)
    assert [t["BP"] for t in got] == [16, 16, 8]
    assert cost(got) == pytest.approx(2.2)


def test_descend_keeps_the_current_tiles_unless_beaten_by_the_margin_and_never_takes_a_refused_one():
    def cost(ts):
        bp = [t["BP"] for t in ts]
        if bp[2] == 16:
            return float("inf")  # refused: wrong answers
        return 10.0 - 0.05 * (bp[0] == 8) - 0.5 * (bp[1] == 8) - 0.01 * bp[2]
    start = tiles(4, 4, 4)
    got = chain_tune.descend(start, CANDS, cost, rounds=2, margin=0.1, log=lambda s: None)
    # layer 0: 0.05 faster is within the margin; layer 1: 0.5 faster is taken; layer 2: BP 8 is 0.04 faster
    # (kept), BP 16 refused
    assert [t["BP"] for t in got] == [4, 8, 4]
    assert start == tiles(4, 4, 4)  # the start list is not changed in place


def test_descend_decides_on_the_median_of_repeated_noisy_timings():
    rng = np.random.default_rng(0)

    def noisy(ts):  # BP 8 is truly 1 us faster on layer 0; the noise has outliers of 5 us
        base = 20.0 - (ts[0]["BP"] == 8)
        return base + (5.0 if rng.random() < 0.2 else 0.0) + rng.normal(0, 0.05)
    got = [chain_tune.descend(tiles(4, 4, 4), CANDS, noisy, rounds=1, repeats=5, log=lambda s: None)[0]["BP"]
           for _ in range(10)]
    assert got.count(8) >= 9


def test_trigger_pass_offers_both_triggers_on_every_layer_but_the_last():
    c = chain_tune.trigger_cands(tiles(4, 8, 16))
    assert [len(x) for x in c] == [2, 2, 0]
    assert {t["trigger"] for t in c[0]} == {"early", "late"} and all(t["BP"] == 8 for t in c[1])


def test_the_result_is_saved_only_if_faster_beyond_the_margin_in_three_of_four_rounds():
    start = [40.0, 39.0, 41.0, 40.0, 38.0, 40.0, 39.5, 40.5]  # the card drifts by a few us
    assert chain_tune.worth_saving(start, [x - 0.5 for x in start], margin=0.1)
    assert not chain_tune.worth_saving(start, [x - 0.05 for x in start], margin=0.1)  # within the margin
    # a lower median from one lucky stretch, but slower in most pairs: not saved
    lucky = [x + 0.3 for x in start[:5]] + [30.0, 30.0, 30.0]
    assert float(np.median(lucky)) < float(np.median(start)) - 0.1
    assert not chain_tune.worth_saving(start, lucky, margin=0.1)
