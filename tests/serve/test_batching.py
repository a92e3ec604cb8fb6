"""The micro-batcher, with a fake predict: merging, packing, keys and failure isolation."""

from __future__ import annotations

import asyncio

import pytest

from illia_export.serve.batching import MicroBatcher


class Recorder:
    """A fake run_group: returns each payload doubled, records the calls, fails on 'bad'."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, key, payloads):
        self.calls.append((key, list(payloads)))
        if "bad" in payloads:
            raise ValueError("bad payload")
        return [p * 2 for p in payloads]


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_with_one_key_share_one_call():
    rec = Recorder()
    b = MicroBatcher(rec, max_batch_size=100, max_latency_ms=0)

    async def main():
        return await asyncio.gather(*(b.submit("k", f"p{i}", rows=2) for i in range(5)))

    out = run(main())
    assert [o[0] for o in out] == [f"p{i}p{i}" for i in range(5)]
    assert all(o[1:] == (10, 5) for o in out)  # 10 rows, 5 requests in the call
    assert len(rec.calls) == 1 and b.stats.merged_calls == 1 and b.stats.largest == 5 and b.stats.requests == 5


def test_keys_are_never_mixed_and_calls_respect_max_batch_size():
    rec = Recorder()
    b = MicroBatcher(rec, max_batch_size=4, max_latency_ms=0)

    async def main():
        jobs = [b.submit("a", "a1", 3), b.submit("b", "b1", 1), b.submit("a", "a2", 1), b.submit("a", "a3", 2),
                b.submit("a", "big", 9)]
        return await asyncio.gather(*jobs)

    out = run(main())
    assert [o[0] for o in out] == ["a1a1", "b1b1", "a2a2", "a3a3", "bigbig"]
    assert [(k, p) for k, p in rec.calls] == [("a", ["a1", "a2"]), ("a", ["a3"]), ("a", ["big"]), ("b", ["b1"])]
    assert out[0][1:] == (4, 2) and out[4][1:] == (9, 1)


def test_a_failing_request_fails_alone():
    rec = Recorder()
    b = MicroBatcher(rec, max_batch_size=100, max_latency_ms=0)

    async def main():
        return await asyncio.gather(
            b.submit("k", "x", 1), b.submit("k", "bad", 1), b.submit("k", "y", 1), return_exceptions=True
        )

    good1, bad, good2 = run(main())
    assert good1 == ("xx", 1, 1) and good2 == ("yy", 1, 1)
    assert isinstance(bad, ValueError) and "bad payload" in str(bad)
    # one merged attempt, then each request alone
    assert [p for _, p in rec.calls] == [["x", "bad", "y"], ["x"], ["bad"], ["y"]]
    assert b.stats.retried_calls == 1 and b.stats.merged_calls == 0


def test_unmergeable_keys_run_each_request_alone():
    rec = Recorder()
    b = MicroBatcher(rec, max_batch_size=100, max_latency_ms=0, mergeable=lambda key: key != "solo")

    async def main():
        return await asyncio.gather(b.submit("solo", "s1", 1), b.submit("solo", "s2", 1))

    assert [o[1:] for o in run(main())] == [(1, 1), (1, 1)]
    assert [p for _, p in rec.calls] == [["s1"], ["s2"]]


def test_latency_window_collects_later_requests():
    rec = Recorder()
    b = MicroBatcher(rec, max_batch_size=3, max_latency_ms=5000)

    async def main():
        first = asyncio.ensure_future(b.submit("k", "p0", 1))
        await asyncio.sleep(0)  # the worker starts waiting for more rows
        await asyncio.sleep(0)
        later = [asyncio.ensure_future(b.submit("k", f"p{i}", 1)) for i in (1, 2)]
        return await asyncio.gather(first, *later)

    # the call starts as soon as max_batch_size rows are there, not after 5 s
    out = run(main())
    assert [o[1:] for o in out] == [(3, 3)] * 3 and len(rec.calls) == 1


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch_size"):
        MicroBatcher(Recorder(), max_batch_size=0)
    with pytest.raises(ValueError, match="max_latency_ms"):
        MicroBatcher(Recorder(), max_latency_ms=-1)
