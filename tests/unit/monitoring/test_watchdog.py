"""The event-loop watchdog: lag measured, a blocked loop reported while it is blocked."""

import asyncio
import logging
import threading
import time

from pyserving.monitoring.watchdog import LoopWatchdog


def _block_the_loop_for(seconds: float) -> None:
    time.sleep(seconds)  # the mistake the watchdog exists to catch


def test_a_blocked_loop_is_reported_with_its_stack_while_blocked(caplog):
    observed: list[float] = []
    warned = threading.Event()

    class Flag(logging.Handler):
        def emit(self, record):
            if "has not run" in record.getMessage():
                warned.set()

    handler = Flag()
    logging.getLogger("pyserving.watchdog").addHandler(handler)

    async def main():
        dog = LoopWatchdog(observed.append, interval=0.02, warn_after_seconds=0.2, repeat_seconds=5)
        dog.start()
        try:
            await asyncio.sleep(0.1)  # a few probes on an idle loop
            _block_the_loop_for(0.6)
            await asyncio.sleep(0.1)
        finally:
            dog.stop()
        return dog

    try:
        with caplog.at_level(logging.WARNING, logger="pyserving.watchdog"):
            asyncio.run(main())
    finally:
        logging.getLogger("pyserving.watchdog").removeHandler(handler)
    assert warned.is_set()
    assert "_block_the_loop_for" in caplog.text  # the loop thread's stack, taken during the block
    assert "was blocked for" in caplog.text
    assert max(observed) >= 0.3
    assert min(observed) < 0.1


def test_an_idle_loop_is_probed_and_not_reported(caplog):
    observed: list[float] = []

    async def main():
        dog = LoopWatchdog(observed.append, interval=0.01, warn_after_seconds=1.0)
        dog.start()
        await asyncio.sleep(0.3)
        dog.stop()

    with caplog.at_level(logging.WARNING, logger="pyserving.watchdog"):
        asyncio.run(main())
    assert len(observed) >= 5 and max(observed) < 1.0
    assert "blocked" not in caplog.text and "has not run" not in caplog.text
