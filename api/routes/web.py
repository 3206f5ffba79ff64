"""The web page at `/`: plain HTML, JS and CSS from api/static (no build step). The page keeps
the API key in the browser and calls the same /v1 API as every other client."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"

# Scripts and styles from this server only; the report is shown in a blob: frame, and its
# inline <style> is inherited under this policy, hence 'unsafe-inline' for styles alone.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; frame-src blob:; connect-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)


def static_files() -> StaticFiles:
    """The page's scripts and styles, mounted at /static by create_app."""
    return StaticFiles(directory=STATIC_DIR)
