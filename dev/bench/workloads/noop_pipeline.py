"""The benchmark's pipeline: it does nothing, so every millisecond measured is overhead.

`async def` so it runs on the event loop like the raw benchmark's noop activity (no
thread-pool hop on either side). `seconds` keeps a run open for the "running" status
measurement; `await` is where a cancellation interrupts it. `padding` makes outputs
too large for the run's memo, so reading the finished run takes its history too.
"""

from __future__ import annotations

import asyncio


async def noop(seconds: float = 0.0, padding: int = 0) -> dict[str, bool | str]:
    """Return at once (or after `seconds`, to be observed while running)."""
    if seconds > 0:
        await asyncio.sleep(seconds)
    return {"ok": True, "padding": "x" * padding} if padding else {"ok": True}
