"""A process-wide asyncio event loop on a daemon thread, for async tools and MCP sessions.

Callers on any thread submit coroutines with `run(coro, timeout_s)`; many calls are in flight at
once on the one loop, so concurrent episodes do not wait on each other.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from concurrent.futures import Future


class BackgroundLoop:
    """One asyncio loop running forever on its own daemon thread (started on first use)."""

    def __init__(self, name: str):
        self.name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=serve, name=self.name, daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def submit(self, coro) -> Future:
        """Schedule `coro` on the loop; a concurrent.futures.Future of its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro, timeout_s: float | None = None):
        """Run `coro` on the loop and wait for its result. On timeout the coroutine is cancelled and
        asyncio.TimeoutError (TimeoutError) is raised."""
        if timeout_s is not None:
            coro = asyncio.wait_for(coro, timeout_s)
        return self.submit(coro).result()

    @property
    def on_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def stop(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(timeout=5)


ASYNC_TOOLS = BackgroundLoop("pact-async-tools")
atexit.register(ASYNC_TOOLS.stop)
