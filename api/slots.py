"""Counted slots per owner for requests that hold part of the server for a while (an upload
being received and checked, a live event stream): one owner's requests can never use up
another owner's share. Past a limit, a 429 in the API's error shape with Retry-After."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from api.errors import ApiError


class Slot:
    """One taken slot. `release` gives it back once; later calls do nothing, so every way a
    request can end may call it."""

    def __init__(self, slots: OwnerSlots, owner_id: str) -> None:
        self.slots, self.owner_id, self.released = slots, owner_id, False

    def release(self) -> None:
        self.slots.release(self)


class OwnerSlots:
    """At most `per_owner` slots held per owner and, when `total` is set, `total` in all.

    `total` guards what the whole process can afford (child processes, sockets); it must be
    larger than `per_owner`, so that filling it takes several owners each at their limit.
    Thread-safe: slots are taken in the threadpool and on the event loop alike.
    """

    def __init__(
        self,
        *,
        per_owner: int,
        total: int | None = None,
        what: str,
        code: str,
        retry_after_seconds: int,
    ) -> None:
        if total is not None and total <= per_owner:
            raise ValueError(f"total ({total}) must be larger than per_owner ({per_owner})")
        self.per_owner, self.total, self.what, self.code = per_owner, total, what, code
        self.retry_after_seconds = retry_after_seconds
        self._lock = threading.Lock()
        self._held: Counter[str] = Counter()

    def held(self, owner_id: str | None = None) -> int:
        """Slots held now by `owner_id`, or by everyone."""
        with self._lock:
            return self._held[owner_id] if owner_id is not None else self._held.total()

    def acquire(self, owner_id: str) -> Slot:
        """A slot for `owner_id`, or ApiError 429 when the owner (or the process) is full."""
        with self._lock:
            if self._held[owner_id] >= self.per_owner:
                raise self._refusal(
                    f"too many {self.what}: at most {self.per_owner} per owner; retry when "
                    "one has ended"
                )
            if self.total is not None and self._held.total() >= self.total:
                raise self._refusal(
                    f"too many {self.what} on this server: at most {self.total} at once; "
                    "retry shortly"
                )
            self._held[owner_id] += 1
        return Slot(self, owner_id)

    @contextmanager
    def take(self, owner_id: str) -> Iterator[None]:
        """Hold a slot for `owner_id` for the block (429 when none is free)."""
        slot = self.acquire(owner_id)
        try:
            yield
        finally:
            slot.release()

    def release(self, slot: Slot) -> None:
        """Give `slot` back; a slot already given back is left alone."""
        with self._lock:
            if slot.released:
                return
            slot.released = True
            self._held[slot.owner_id] -= 1
            if self._held[slot.owner_id] <= 0:
                del self._held[slot.owner_id]

    def _refusal(self, message: str) -> ApiError:
        return ApiError(
            429, self.code, message, headers={"Retry-After": str(self.retry_after_seconds)}
        )
