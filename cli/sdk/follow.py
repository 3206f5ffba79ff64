"""Following a job to its end: its events from the SSE stream (read by a thread of its own),
the job itself polled for progress; paged events where the stream is not to be had."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from cli.sdk.errors import RobustifyError
from cli.sdk.types import Event, Job

if TYPE_CHECKING:
    from cli.sdk.client import RobustifyClient

log = logging.getLogger(__name__)

STOP_JOIN_SECONDS = 2.0


class EventFollower(threading.Thread):
    """Reads the job's SSE stream into a queue, on a client of its own (connections are not
    shared between threads). `failed` is set if the stream cannot be had or breaks for good."""

    def __init__(self, client: RobustifyClient, job_id: str) -> None:
        super().__init__(name=f"robustify-events-{job_id}", daemon=True)
        self.client, self.job_id = client.clone(), job_id
        self.events: queue.Queue[Event] = queue.Queue()
        self.failed = False
        self._stopping = threading.Event()

    def run(self) -> None:
        try:
            for event in self.client.stream_events(self.job_id):
                if self._stopping.is_set():
                    return
                self.events.put(event)
        except RobustifyError as exc:
            log.debug("job %s: event stream unavailable (%s); polling instead", self.job_id, exc)
            self.failed = True
        finally:
            self.client.close()

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
    client: RobustifyClient,
    job_id: str,
    *,
    on_progress: Callable[[Job], None] | None,
    on_event: Callable[[Event], None] | None,
    poll_interval: float,
    timeout: float | None,
) -> Job:
    """Call `on_event` once per event in order and `on_progress` with each fresh job, until
    the job ends; return the ended job."""
    deadline = None if timeout is None else time.monotonic() + timeout
    follower = EventFollower(client, job_id)
    follower.start()
    seen = 0
    try:
        while True:
            events = follower.take(poll_interval)
            # Read after the events: the job is at least as new as the last of them.
            job = client.get_job(job_id)
            if follower.failed or job.ended:
                # The paged endpoint: polling where SSE failed, and a sure last catch-up (the
                # final event is written in the same transaction as the final status).
                events += list(client.events(job_id, after=seen))
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
