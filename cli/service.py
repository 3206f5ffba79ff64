"""Running the service: `robustify api`, `robustify worker` and `robustify up` (both on one
machine, embedded). Each reads Settings from ROBUSTIFY_* and logs JSON lines to stderr."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from cli.database import display_url, migrate
from cli.processes import (
    ChildProcess,
    Stopped,
    robustify_argv,
    signals_force,
    stop_all,
    stop_on_signals,
)
from core.service.config import Settings
from core.service.logs import configure_logging
from core.service.storage import artifacts_location

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger(__name__)

DEVICE_PATTERN = re.compile(r"cpu|mps|(cuda|xpu)(:\d+)?")
# How long a stopping worker may take to hand back its job before it is killed. A killed job is
# not lost: its lease expires and the sweeper hands it to a worker, from its last checkpoint.
WORKER_STOP_SECONDS = 30.0
# Open SSE streams would otherwise hold a stopping API forever.
API_GRACEFUL_SHUTDOWN_SECONDS = 10

HostOption = Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")]
PortOption = Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")]
StopTimeoutOption = Annotated[
    float,
    typer.Option(
        min=0, help="Seconds a stopping worker gets to hand back its job before it is killed."
    ),
]


def _checked_device(device: str) -> str:
    if not DEVICE_PATTERN.fullmatch(device):
        raise typer.BadParameter(f"{device!r} is not a device: use cpu, cuda or cuda:N")
    return device


def _node_name(device: str | None) -> str:
    # Celery node names must differ between the workers of one host: one per device.
    return f"robustify-{re.sub(r'[^a-z0-9]', '', device or 'worker')}@%h"


# -- the API ---------------------------------------------------------------------------------


def _api_server(settings: Settings, *, host: str, port: int) -> uvicorn.Server:
    import uvicorn

    from api.app import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_config=None,  # logging is configure_logging's: JSON lines, with the rest
        timeout_graceful_shutdown=API_GRACEFUL_SHUTDOWN_SECONDS,
    )
    return uvicorn.Server(config)


def api(
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    run_migrations: Annotated[
        bool,
        typer.Option(
            "--migrate/--no-migrate",
            help="Upgrade the database first (off where a one-shot migrate step does it).",
        ),
    ] = True,
) -> None:
    """Run the REST API (and the sweeper that takes up lost jobs) against ROBUSTIFY_* settings."""
    settings = Settings()
    configure_logging(settings)
    with stop_on_signals():
        try:
            if run_migrations:
                migrate(settings)
            _api_server(settings, host=host, port=port).run()
        except Stopped:
            pass


# -- the worker ------------------------------------------------------------------------------


def _run_celery_worker(*, concurrency: int, device: str | None, node_name: str | None) -> int:
    settings = Settings()
    if device is not None:
        settings = settings.model_copy(update={"worker_device": device})
    configure_logging(settings)
    if concurrency > 1 and (settings.worker_device or "").startswith("cuda"):
        log.warning(
            "%d pool processes will share %s: run one worker per GPU instead (--device cuda:N)",
            concurrency,
            settings.worker_device,
        )
    # The app runs its tasks with these settings (the device included); it also keeps Celery
    # from replacing this logging setup (make_celery connects Celery's setup_logging signal).
    from worker.celery_app import consumed_queues, make_celery

    code = make_celery(settings).start(
        argv=[
            "worker",
            # Every world size up to this worker's ranks (its GPUs, or worker_processes).
            f"--queues={','.join(consumed_queues(settings))}",
            "--pool=prefork",
            f"--concurrency={concurrency}",
            f"--hostname={node_name or _node_name(settings.worker_device)}",
            f"--loglevel={settings.log_level}",
            # No worker-to-worker chatter: jobs are coordinated through the database.
            "--without-mingle",
            "--without-gossip",
        ]
    )
    return int(code or 0)


def _supervise_workers(devices: list[str], *, stop_timeout: float) -> int:
    """One worker process per device; they all stop when one ends or a signal arrives."""
    configure_logging(Settings())
    force = threading.Event()
    children: list[ChildProcess] = []
    with stop_on_signals():
        try:
            for device in devices:
                argv = robustify_argv("worker", "--device", device, "--concurrency", "1")
                children.append(ChildProcess(f"worker {device}", argv, os.environ).start())
            while True:
                ended = [child for child in children if child.poll() is not None]
                if ended:
                    log.error("%s exited with code %s: stopping", ended[0].name, ended[0].poll())
                    return 1
                time.sleep(0.5)
        except Stopped:
            return 0
        finally:
            with signals_force(force):
                stop_all(children, stop_timeout, force=force)


def worker(
    concurrency: Annotated[
        int,
        typer.Option(
            min=1, help="Jobs at once (prefork processes). On GPUs: one per GPU, so use --device."
        ),
    ] = 1,
    device: Annotated[
        list[str] | None,
        typer.Option(
            help="Where jobs run: cuda:N or cpu (default: ROBUSTIFY_WORKER_DEVICE, else cuda if "
            "there is one, else cpu). Repeat it to start one worker process per GPU.",
        ),
    ] = None,
    node_name: Annotated[
        str | None, typer.Option("--name", help="Celery node name (default robustify-DEVICE@host).")
    ] = None,
    stop_timeout: Annotated[
        float,
        typer.Option(
            min=0,
            help="With several --device: seconds each worker gets to hand back its job before "
            "it is killed. (A single worker is Celery's: SIGTERM is its warm shutdown.)",
        ),
    ] = WORKER_STOP_SECONDS,
) -> None:
    """Run a Celery worker for the jobs queue (against ROBUSTIFY_DATABASE_URL and _BROKER_URL)."""
    devices = [_checked_device(each) for each in device or []]
    if len(devices) > 1:
        if concurrency != 1 or node_name is not None:
            raise typer.BadParameter("with several --device, each gets one process of its own")
        if len(set(devices)) < len(devices):
            raise typer.BadParameter("a --device is given twice")
        code = _supervise_workers(devices, stop_timeout=stop_timeout)
    else:
        code = _run_celery_worker(
            concurrency=concurrency, device=devices[0] if devices else None, node_name=node_name
        )
    raise typer.Exit(code=code)


# -- both, on one machine --------------------------------------------------------------------


def _stop_server_if_worker_ends(
    worker_process: ChildProcess, server: uvicorn.Server, done: threading.Event
) -> None:
    while not done.wait(1.0):
        code = worker_process.poll()
        if code is not None:
            log.error("the worker exited with code %s: stopping the API", code)
            server.should_exit = True
            return


def _print_banner(settings: Settings, *, host: str, port: int, worker_pid: int) -> None:
    console = Console()
    console.print(f"[bold]robustify is starting[/] at [cyan]http://{host}:{port}[/]")
    console.print(f"  data dir  {settings.data_dir.resolve()}", markup=False)
    console.print(f"  database  {display_url(settings.resolved_database_url)}", markup=False)
    console.print(f"  artifacts {artifacts_location(settings)}", markup=False)
    console.print(f"  worker    pid {worker_pid}", markup=False)
    console.print("  an API key: robustify keys create NAME   (Ctrl-C stops)", markup=False)


def up(
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    device: Annotated[
        str | None, typer.Option(help="The worker's device (default: cuda if any, else cpu).")
    ] = None,
    stop_timeout: StopTimeoutOption = WORKER_STOP_SECONDS,
) -> None:
    """Run the whole service on this machine: the API here, a Celery worker beside it.

    With no ROBUSTIFY_* settings everything lives in ./.robustify: a SQLite database, a
    filesystem broker and the artifacts; nothing else needs installing.
    """
    settings = Settings()
    configure_logging(settings)
    worker_argv = robustify_argv("worker", "--concurrency", "1")
    if device is not None:
        worker_argv += ["--device", _checked_device(device)]
    # The worker reads the same settings; a relative data dir is pinned for it.
    env = dict(os.environ, ROBUSTIFY_DATA_DIR=str(settings.data_dir.resolve()))
    worker_process: ChildProcess | None = None
    worker_ended_early = False
    done, force = threading.Event(), threading.Event()
    with stop_on_signals():
        try:
            migrate(settings)
            server = _api_server(settings, host=host, port=port)
            worker_process = ChildProcess("worker", worker_argv, env).start()
            _print_banner(settings, host=host, port=port, worker_pid=worker_process.pid)
            threading.Thread(
                target=_stop_server_if_worker_ends,
                args=(worker_process, server, done),
                name="robustify-worker-watch",
                daemon=True,
            ).start()
            server.run()
        except Stopped:
            pass
        finally:
            done.set()
            if worker_process is not None:
                worker_ended_early = worker_process.poll() is not None
                with signals_force(force):
                    worker_process.stop(stop_timeout, force=force)
    if worker_ended_early:
        raise typer.Exit(code=1)
