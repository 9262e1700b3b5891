"""The review service's web app: the routes of :class:`~qexplorer.review.pages.Pages`, the
signed session and the security headers.

One small static script for the keyboard shortcuts, no JavaScript build. The session is a
signed cookie (``SameSite=Strict``, twelve hours); responses forbid framing and inline scripts.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from qexplorer.config import ReviewSettings
from qexplorer.review.metrics import ReviewMetrics
from qexplorer.review.pages import HERE, Desk, Pages
from qexplorer.review.queue import ReviewQueue

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
                               "base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


async def security_headers(request: Request, call_next) -> Response:
    """Every response with :data:`SECURITY_HEADERS`."""
    response = await call_next(request)
    response.headers.update(SECURITY_HEADERS)
    return response


def create_app(queue: ReviewQueue, desk: Desk, settings: ReviewSettings,
               metrics: ReviewMetrics | None = None,
               clock: Callable[[], float] = time.time) -> Starlette:
    """The review service's web app."""
    pages = Pages(queue, desk, settings, metrics or ReviewMetrics(queue, clock), clock)
    given = settings.session_secret.get_secret_value() if settings.session_secret else ""
    return Starlette(
        routes=[
            Route("/", pages.queue_page),
            Route("/login", pages.login_page, methods=["GET"]),
            Route("/login", pages.login, methods=["POST"]),
            Route("/logout", pages.logout, methods=["POST"]),
            Route("/decide", pages.decide, methods=["POST"]),
            Route("/undo", pages.undo, methods=["POST"]),
            Route("/models", pages.models_page),
            Route("/models/{version:path}", pages.model_page),
            Route("/health", pages.health),
            Route("/metrics", pages.metrics_page),
            Route("/favicon.ico", pages.favicon),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=security_headers),
                    Middleware(SessionMiddleware, secret_key=given or secrets.token_urlsafe(32),
                               session_cookie="qexplorer_review", max_age=12 * 3600,
                               same_site="strict", https_only=settings.secure_cookies)],
    )
