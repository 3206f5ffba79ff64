"""Following a job to its end: its events from the SSE stream (read by a thread of its own),
the job itself polled for progress; paged events where the stream is not to be had.

It knows the API only through the three callables it is handed (no import of the client)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager

from robustify.errors import RobustifyError
from robustify.types.jobs import Event, Job

log = logging.getLogger(__name__)

STOP_JOIN_SECONDS = 2.0

# Opens the job's event stream; closing it closes its connection.
OpenStream = Callable[[], AbstractContextManager[Iterator[Event]]]


class EventFollower(threading.Thread):
    """Reads the job's SSE stream into a queue. `failed` is set if the stream cannot be had or
    breaks for good."""

    def __init__(self, job_id: str, open_stream: OpenStream) -> None:
        super().__init__(name=f"robustify-events-{job_id}", daemon=True)
        self.job_id, self._open_stream = job_id, open_stream
        self.events: queue.Queue[Event] = queue.Queue()
        self.failed = False
        self._stopping = threading.Event()

    def run(self) -> None:
        try:
            with self._open_stream() as events:
                for event in events:
                    if self._stopping.is_set():
                        return
                    self.events.put(event)
        except RobustifyError as exc:
            log.debug("job %s: event stream unavailable (%s); polling instead", self.job_id, exc)
            self.failed = True

    def take(self, timeout: float) -> list[Event]:
        """The events received so far; waits up to `timeout` seconds for the first one."""
        taken: list[Event] = []
        try:
            taken.append(self.events.get(timeout=timeout))
            while True:
                taken.append(self.events.get_nowait())
        except queue.Empty:
            pass
        return taken

    def stop(self) -> None:
        # The server ends the stream once the job has ended; one left early (a timeout, Ctrl-C)
        # is a daemon thread that stops at its next event.
        self._stopping.set()
        self.join(STOP_JOIN_SECONDS)


def follow_job(
    job_id: str,
    *,
    get_job: Callable[[], Job],
    events_after: Callable[[int], Iterable[Event]],
    open_stream: OpenStream,
    on_progress: Callable[[Job], None] | None,
    on_event: Callable[[Event], None] | None,
    poll_interval: float,
    timeout: float | None,
) -> Job:
    """Call `on_event` once per event in order and `on_progress` with each fresh job, until
    the job ends; return the ended job."""
    deadline = None if timeout is None else time.monotonic() + timeout
    follower = EventFollower(job_id, open_stream)
    follower.start()
    seen = 0
    try:
        while True:
            events = follower.take(poll_interval)
            # Read after the events: the job is at least as new as the last of them.
            job = get_job()
            if follower.failed or job.ended:
                # The paged endpoint: polling where SSE failed, and a sure last catch-up (the
                # final event is written in the same transaction as the final status).
                events += list(events_after(seen))
            for event in sorted(
                {each.id: each for each in events if each.id > seen}.values(),
                key=lambda each: each.id,
            ):
                seen = event.id
                if on_event is not None:
                    on_event(event)
            if on_progress is not None:
                on_progress(job)
            if job.ended:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job.status} after {timeout:g} s")
    finally:
        follower.stop()
