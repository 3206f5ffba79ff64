"""Which queued job a worker claims (core.service.jobs.dispatch), on SQLite and PostgreSQL: the
owner with the fewest running jobs, then the one served least recently, then the oldest job;
owners at their running limit wait; world sizes stay apart; racing workers never share a job
or pass a limit."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from model_rows import owner_with_a_bare_model
from sqlalchemy import event, select

from core.service.config import Settings
from core.service.context import ServiceContext
from core.service.db import transaction
from core.service.errors import JobCode
from core.service.jobs import dispatch, lifecycle, pipeline, waiting
from core.service.jobs.lifecycle import FAILED, QUEUED, RUNNING, SUCCEEDED
from core.service.tables import Job, utcnow

MAX_ATTEMPTS = 3


@pytest.fixture(params=["embedded", "production"])
def context(request: pytest.FixtureRequest) -> Any:
    settings: Settings = request.getfixturevalue(f"{request.param}_settings")
    context = ServiceContext.build(settings)
    yield context
    context.engine.dispose()


def new_owner(context: ServiceContext) -> tuple[str, str]:
    """An owner and a model row of theirs (no file: dispatch reads only the jobs)."""
    with transaction(context.sessions) as session:
        owner_id, model = owner_with_a_bare_model(session)
        return owner_id, model.id


def queue_jobs(
    context: ServiceContext, owner: tuple[str, str], count: int, *, world_size: int = 1
) -> list[str]:
    ids = []
    for _ in range(count):
        with transaction(context.sessions) as session:
            job, _ = lifecycle.create_job(
                session,
                owner_id=owner[0],
                kind="evaluate",
                model_id=owner[1],
                dataset="builtin:digits",
                config={"resources": {"world_size": world_size}},
            )
            ids.append(job.id)
    return ids


def claim(
    context: ServiceContext, *, world_size: int = 1, max_running: int | None = None
) -> Job | None:
    return dispatch.claim_next_job(
        context.sessions,
        world_size=world_size,
        worker_id=f"w-{uuid.uuid4().hex[:6]}",
        lease_seconds=60,
        max_attempts=MAX_ATTEMPTS,
        max_running_per_owner=max_running,
    )


def finish(context: ServiceContext, job: Job) -> None:
    assert job.worker_id is not None
    lifecycle.finish_job(context.sessions, job.id, worker_id=job.worker_id, status=SUCCEEDED)


def run_one_at_a_time(context: ServiceContext, count: int) -> list[str]:
    """What one worker runs, in order: claim, finish, claim again."""
    order = []
    for _ in range(count):
        job = claim(context)
        assert job is not None
        order.append(job.id)
        finish(context, job)
    return order


def test_one_owners_50_queued_jobs_do_not_starve_another_owners_one(context: ServiceContext):
    alice, bob = new_owner(context), new_owner(context)
    backlog = queue_jobs(context, alice, 50)
    [bobs] = queue_jobs(context, bob, 1)

    order = run_one_at_a_time(context, 4)

    assert order == [backlog[0], bobs, backlog[1], backlog[2]]  # his right after her first


def test_a_backlog_runs_oldest_first_to_its_end(context: ServiceContext):
    alice = new_owner(context)
    backlog = queue_jobs(context, alice, 5)

    assert run_one_at_a_time(context, 5) == backlog
    assert claim(context) is None


def test_two_backlogs_take_turns(context: ServiceContext):
    alice, bob = new_owner(context), new_owner(context)
    hers = queue_jobs(context, alice, 3)
    his = queue_jobs(context, bob, 3)

    order = run_one_at_a_time(context, 6)

    assert order == [hers[0], his[0], hers[1], his[1], hers[2], his[2]]


def test_the_owner_with_fewer_running_jobs_goes_first(context: ServiceContext):
    alice, bob = new_owner(context), new_owner(context)
    queue_jobs(context, alice, 3)
    first = claim(context)
    assert first is not None and first.owner_id == alice[0]
    [bobs] = queue_jobs(context, bob, 1)  # queued after alice's, while one of hers runs

    second = claim(context)

    assert second is not None and second.id == bobs


def test_an_owner_at_its_running_limit_waits_while_others_run(context: ServiceContext):
    alice, bob = new_owner(context), new_owner(context)
    hers = queue_jobs(context, alice, 3)
    his = queue_jobs(context, bob, 1)

    running = [claim(context, max_running=1) for _ in range(3)]

    assert [job.id if job else None for job in running] == [hers[0], his[0], None]
    assert running[0] is not None
    finish(context, running[0])
    after = claim(context, max_running=1)
    assert after is not None and after.id == hers[1]


def test_a_token_claims_only_jobs_of_its_world_size(context: ServiceContext):
    alice = new_owner(context)
    [wide] = queue_jobs(context, alice, 1, world_size=2)
    [narrow] = queue_jobs(context, alice, 1, world_size=1)

    single = claim(context, world_size=1)
    double = claim(context, world_size=2)

    assert single is not None and single.id == narrow
    assert double is not None and double.id == wide
    assert claim(context, world_size=1) is None and claim(context, world_size=2) is None


def test_racing_workers_never_share_a_job_nor_pass_the_running_limit(context: ServiceContext):
    owners = [new_owner(context) for _ in range(3)]
    for owner in owners:
        queue_jobs(context, owner, 6)
    limit, workers = 2, 8
    claimed: list[Job] = []
    lock = threading.Lock()
    start = threading.Barrier(workers)

    def worker() -> None:
        start.wait()
        job = claim(context, max_running=limit)
        if job is not None:
            with lock:
                claimed.append(job)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    ids = [job.id for job in claimed]
    assert len(ids) == len(set(ids)) == 3 * limit  # every owner's places filled, once each
    per_owner = Counter(job.owner_id for job in claimed)
    assert per_owner == {owner[0]: limit for owner in owners}
    with context.sessions() as session:
        rows = session.execute(select(Job.owner_id, Job.status, Job.attempts)).all()
    assert Counter(row.owner_id for row in rows if row.status == RUNNING) == per_owner
    assert all(row.attempts == (1 if row.status == RUNNING else 0) for row in rows)


def test_two_claims_at_once_of_one_owners_jobs_cannot_both_take_its_last_place(
    context: ServiceContext,
):
    alice = new_owner(context)
    first, second = queue_jobs(context, alice, 2)
    holding = threading.Event()

    def hold_the_first_claim_open(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        # The first claim's UPDATE has run; its transaction stays open while the second starts.
        if threading.current_thread().name == "first" and statement.startswith("UPDATE jobs"):
            holding.set()
            time.sleep(1.0)

    event.listen(context.engine, "after_cursor_execute", hold_the_first_claim_open)
    claims: dict[str, Job | None] = {}

    def claim_first() -> None:
        claims["first"] = direct_claim(context, first, max_running=1)

    thread = threading.Thread(target=claim_first, name="first")
    try:
        thread.start()
        assert holding.wait(timeout=10)
        claims["second"] = direct_claim(context, second, max_running=1)
        thread.join()
    finally:
        event.remove(context.engine, "after_cursor_execute", hold_the_first_claim_open)

    assert claims["first"] is not None and claims["second"] is None
    with context.sessions() as session:
        assert session.scalar(select(Job.status).where(Job.id == second)) == QUEUED


def direct_claim(context: ServiceContext, job_id: str, *, max_running: int) -> Job | None:
    return lifecycle.claim_job(
        context.sessions,
        job_id,
        worker_id=f"w-{uuid.uuid4().hex[:6]}",
        lease_seconds=60,
        max_attempts=MAX_ATTEMPTS,
        max_running_per_owner=max_running,
    )


def test_a_claim_whose_owner_lost_its_last_job_between_the_reads_takes_another_owners(
    context: ServiceContext,
):
    alice, bob = new_owner(context), new_owner(context)
    [hers] = queue_jobs(context, alice, 1)
    [his] = queue_jobs(context, bob, 1)
    chosen, taken = threading.Event(), threading.Event()

    def pause_after_choosing_the_owner(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        # The first claimer has chosen alice (the fairest); the second takes her one job now.
        if (
            threading.current_thread().name == "first"
            and "GROUP BY" in statement
            and not chosen.is_set()
        ):
            chosen.set()
            assert taken.wait(timeout=10)

    event.listen(context.engine, "after_cursor_execute", pause_after_choosing_the_owner)
    claims: dict[str, Job | None] = {}

    def claim_first() -> None:
        claims["first"] = claim(context)

    thread = threading.Thread(target=claim_first, name="first")
    try:
        thread.start()
        assert chosen.wait(timeout=10)
        claims["second"] = claim(context)
        taken.set()
        thread.join()
    finally:
        event.remove(context.engine, "after_cursor_execute", pause_after_choosing_the_owner)

    assert claims["second"] is not None and claims["second"].id == hers
    assert claims["first"] is not None and claims["first"].id == his  # not dropped: bob's


def test_wake_tokens_name_the_owners_oldest_waiting_job_of_each_world_size(
    context: ServiceContext,
):
    alice, bob = new_owner(context), new_owner(context)
    narrow = queue_jobs(context, alice, 2, world_size=1)
    wide = queue_jobs(context, alice, 2, world_size=2)
    queue_jobs(context, bob, 1)

    with context.sessions() as session:
        tokens = waiting.wake_tokens(session, alice[0])

    assert sorted(tokens) == sorted([(narrow[0], 1), (wide[0], 2)])


def test_a_sweep_that_ends_a_dead_workers_job_wakes_its_owners_waiting_job(
    context: ServiceContext,
):
    alice = new_owner(context)
    hers = queue_jobs(context, alice, 2)
    [wide] = queue_jobs(context, alice, 1, world_size=2)
    job = claim(context, max_running=1)
    assert job is not None and job.id == hers[0]
    # Its worker died on its last attempt: the sweep fails it, freeing alice's one place.
    with transaction(context.sessions) as session:
        row = session.get(Job, job.id)
        assert row is not None
        row.attempts, row.lease_expires_at = MAX_ATTEMPTS, utcnow() - timedelta(seconds=1)

    to_enqueue = lifecycle.sweep(
        context.sessions, max_attempts=MAX_ATTEMPTS, requeue_queued_after=timedelta(hours=1)
    )

    assert sorted(to_enqueue) == sorted([hers[1], wide])  # one token for each world size
    with context.sessions() as session:
        assert session.scalar(select(Job.status).where(Job.id == job.id)) == FAILED
        assert session.scalar(select(Job.status).where(Job.id == hers[1])) == QUEUED


def test_a_queued_job_out_of_attempts_is_failed_by_the_sweep_not_hidden(context: ServiceContext):
    alice = new_owner(context)
    spent, fresh = queue_jobs(context, alice, 2)
    with transaction(context.sessions) as session:
        row = session.get(Job, spent)
        assert row is not None
        row.attempts = MAX_ATTEMPTS  # max_attempts lowered while it waited

    lifecycle.sweep(
        context.sessions, max_attempts=MAX_ATTEMPTS, requeue_queued_after=timedelta(hours=1)
    )

    with context.sessions() as session:
        row = session.get(Job, spent)
        assert row is not None and row.status == FAILED
        assert row.error is not None and row.error["code"] == JobCode.TOO_MANY_ATTEMPTS
    claimed = claim(context)
    assert claimed is not None and claimed.id == fresh


def test_the_sweep_sends_no_stale_token_for_an_owner_at_its_running_limit(
    context: ServiceContext,
):
    alice, bob = new_owner(context), new_owner(context)
    hers = queue_jobs(context, alice, 3)
    his = queue_jobs(context, bob, 1)
    running = claim(context, max_running=1)
    assert running is not None and running.id == hers[0]
    long_ago = utcnow() - timedelta(hours=1)
    with transaction(context.sessions) as session:
        for row in session.scalars(select(Job).where(Job.status == QUEUED)):
            row.enqueued_at = long_ago

    def sweep(max_running: int | None) -> list[str]:
        return lifecycle.sweep(
            context.sessions,
            max_attempts=MAX_ATTEMPTS,
            requeue_queued_after=timedelta(minutes=5),
            max_running_per_owner=max_running,
        )

    assert sweep(1) == his  # alice's waiting jobs wait for her place, not for a token
    assert sorted(sweep(2)) == sorted(hers[1:])  # below a higher limit: re-sent


def test_a_job_run_to_its_end_sends_a_token_for_each_world_size_its_owner_waits_in(
    context: ServiceContext,
):
    limited = ServiceContext.build(
        context.settings.model_copy(update={"max_running_jobs_per_owner": 1})
    )
    alice, bob = new_owner(context), new_owner(context)
    hers = queue_jobs(context, alice, 2)
    [wide] = queue_jobs(context, alice, 1, world_size=2)
    queue_jobs(context, bob, 1)
    sent: list[tuple[str, int]] = []

    try:
        # Its model's file is not in the store: the run ends at once, failed.
        ran = pipeline.run_next_job(
            limited, world_size=1, worker_id="w-plain", send=lambda *token: sent.append(token)
        )
    finally:
        limited.engine.dispose()

    assert ran == hers[0]
    with context.sessions() as session:
        row = session.get(Job, hers[0])
        assert row is not None and row.status == FAILED
        assert row.error is not None and row.error["code"] == "invalid_model"
    assert sorted(sent) == sorted([(hers[1], 1), (wide, 2)])  # hers only, one per size
