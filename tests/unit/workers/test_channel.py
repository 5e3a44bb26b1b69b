"""The supervisor-worker channel: calls, notes in order, errors, the other end going away."""

from __future__ import annotations

import asyncio
import functools
import socket

import pytest

from pyserving.errors import Code, ServingError
from pyserving.workers.channel import Channel, ChannelClosed


def run(test):
    """The test's coroutine on a fresh event loop."""

    @functools.wraps(test)
    def wrapper():
        asyncio.run(asyncio.wait_for(test(), 30))

    return wrapper


async def pair(handler_a, handler_b):
    a, b = socket.socketpair()
    left, right = await Channel.open(a, handler_a), await Channel.open(b, handler_b)
    tasks = [asyncio.create_task(left.serve()), asyncio.create_task(right.serve())]
    return left, right, tasks


@run
async def test_calls_answer_and_errors_cross_as_serving_errors():
    async def handler(op, payload):
        if op == "double":
            return payload * 2
        raise ServingError(Code.NOT_FOUND, f"no {op}")

    async def nothing(op, payload):
        return None

    left, right, tasks = await pair(nothing, handler)
    assert await left.call("double", 21) == 42
    with pytest.raises(ServingError) as info:
        await left.call("other")
    assert info.value.code == Code.NOT_FOUND and info.value.message == "no other"
    left.close()
    await asyncio.gather(*tasks)


@run
async def test_notes_arrive_in_order_and_a_slow_call_does_not_hold_them_up():
    seen: list = []
    release = asyncio.Event()

    async def handler(op, payload):
        if op == "slow":
            await release.wait()
            return "done"
        seen.append(payload)
        if len(seen) == 3:
            release.set()

    async def nothing(op, payload):
        return None

    left, right, tasks = await pair(nothing, handler)
    slow = asyncio.create_task(left.call("slow"))
    for i in range(3):
        left.note("n", i)
    assert await asyncio.wait_for(slow, 10) == "done"
    assert seen == [0, 1, 2]
    left.close()
    await asyncio.gather(*tasks)


@run
async def test_a_pending_call_fails_when_the_other_end_goes_away():
    started = asyncio.Event()

    async def never(op, payload):
        started.set()
        await asyncio.Event().wait()

    async def nothing(op, payload):
        return None

    left, right, tasks = await pair(nothing, never)
    call = asyncio.create_task(left.call("hang"))
    await started.wait()
    right.close()
    with pytest.raises(ChannelClosed):
        await asyncio.wait_for(call, 10)
    tasks[1].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    left.note("dropped")  # a note to a closed channel is dropped, not raised


@run
async def test_a_call_times_out_as_deadline_exceeded():
    async def never(op, payload):
        await asyncio.Event().wait()

    async def nothing(op, payload):
        return None

    left, right, tasks = await pair(nothing, never)
    with pytest.raises(ServingError) as info:
        await left.call("hang", timeout=0.05)
    assert info.value.code == Code.DEADLINE_EXCEEDED
    left.close()
    right.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
