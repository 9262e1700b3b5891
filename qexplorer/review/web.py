"""The review pages: a Starlette app over a :class:`~review.queue.ReviewQueue`.

Server-rendered Jinja2 templates (autoescaped: a listing is hostile input and shows as text),
one small static script for the keyboard shortcuts, no JavaScript build. Reviewers sign in
with the credentials in settings; the session is a signed cookie (``SameSite=Strict``); every
form carries the session's CSRF token; responses forbid framing and inline scripts.

A decision is recorded in three steps that never interleave with another request on the same
listing: the queue builds the record and holds the listing, the :class:`Desk` publishes it
(and waits for the broker), then the queue applies it. If publishing fails, the listing is
released and the reviewer sees an error: a decision is either on the topic or not made.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import defaultdict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from qexplorer.config import ReviewSettings
from qexplorer.review import auth
from qexplorer.review.metrics import ReviewMetrics
from qexplorer.review.present import bar_chart, highlight, model_reports, query_terms
from qexplorer.review.queue import VERDICTS, ReviewError, ReviewQueue
from schemas.models import ModerationDecision

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
#: Sign-in attempts a name may fail in :data:`FAILURE_WINDOW_S` before it is refused.
MAX_FAILURES = 5
FAILURE_WINDOW_S = 60.0
MAX_TRACKED_NAMES = 10_000
#: Items listed under "up next".
UP_NEXT = 10
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
                               "base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Desk(Protocol):
    """Where decisions go: the moderation-decisions topic, in the service."""

    async def record(self, decision: ModerationDecision) -> None:
        """Publish a decision and return once the broker has it (raise otherwise)."""
        ...


class _Forbidden(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def create_app(queue: ReviewQueue, desk: Desk, settings: ReviewSettings,
               metrics: ReviewMetrics | None = None,
               clock: Callable[[], float] = time.time) -> Starlette:
    """The review service's web app."""
    templates = Jinja2Templates(env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True))
    metrics = metrics or ReviewMetrics(queue, clock)
    failures: defaultdict[str, deque[float]] = defaultdict(deque)

    def render(request: Request, name: str, status: int = 200, **context) -> Response:
        context.setdefault("reviewer", request.session.get("reviewer"))
        context.setdefault("depth", queue.depth())
        return templates.TemplateResponse(request, name, {**context, "csrf": _csrf(request)},
                                          status_code=status)

    def reviewer_of(request: Request) -> str | None:
        name = request.session.get("reviewer")
        return name if name in settings.users else None

    async def checked_form(request: Request, signed_in: bool = True) -> tuple[str, dict]:
        """The reviewer and the form of a POST, or :class:`_Forbidden`."""
        reviewer = reviewer_of(request)
        if signed_in and reviewer is None:
            raise _Forbidden(401, "sign in first")
        form = await request.form()
        if not auth.token_matches(request.session.get("csrf"), form.get("csrf")):
            raise _Forbidden(403, "this form has expired or did not come from this site: "
                                  "reload the page and try again")
        return reviewer or "", {k: str(v) for k, v in form.items()}

    def refuse(request: Request, status: int, message: str) -> Response:
        return render(request, "error.html", status=status, message=message)

    async def login_page(request: Request) -> Response:
        return render(request, "login.html", error=None)

    async def login(request: Request) -> Response:
        try:
            _, form = await checked_form(request, signed_in=False)
        except _Forbidden as exc:
            return refuse(request, exc.status, str(exc))
        name, password = form.get("name", ""), form.get("password", "")
        now = clock()
        if len(failures) > MAX_TRACKED_NAMES:  # names tried at random must not grow memory
            for stale in [n for n, times in failures.items()
                          if not times or times[-1] < now - FAILURE_WINDOW_S]:
                del failures[stale]
        recent = failures[name]
        while recent and recent[0] < now - FAILURE_WINDOW_S:
            recent.popleft()
        if len(recent) >= MAX_FAILURES:
            return render(request, "login.html", status=429,
                          error="too many failed attempts: wait a minute")
        if not auth.authenticate(settings.users, name, password):
            recent.append(now)
            return render(request, "login.html", status=401, error="wrong name or password")
        failures.pop(name, None)
        request.session.clear()
        request.session.update(reviewer=name, csrf=auth.new_token())
        return RedirectResponse("/", status_code=303)

    async def logout(request: Request) -> Response:
        try:
            await checked_form(request, signed_in=False)
        except _Forbidden as exc:
            return refuse(request, exc.status, str(exc))
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    async def queue_page(request: Request) -> Response:
        reviewer = reviewer_of(request)
        if reviewer is None:
            return RedirectResponse("/login", status_code=303)
        now = clock()
        item = queue.take(reviewer, now)
        context = {"item": item, "up_next": [], "segments": {}, "priority": None,
                   "seeds": [], "last": queue.last_decision(reviewer)}
        if item is not None:
            terms = query_terms(item.queries)
            context.update(
                segments={"title": highlight(item.title, terms),
                          "description": highlight(item.description, terms)},
                priority=queue.priority(item),
                seeds=[(s, queue.seeds.get(s)) for s in item.seed_ids],
                findings=sorted(item.findings.values(), key=lambda d: d.best_rank),
                lease_left=int(item.lease.expires - now) if item.lease else 0)
        context["up_next"] = [i for i in queue.pending(UP_NEXT + 1) if item is None
                              or i.listing_id != item.listing_id][:UP_NEXT]
        context["message"] = request.session.pop("message", None)
        return render(request, "queue.html", verdicts=VERDICTS, **context)

    async def decide(request: Request) -> Response:
        try:
            reviewer, form = await checked_form(request)
            verdict = form.get("decision", "")
            if verdict == "skip":
                queue.skip(reviewer, form.get("listing_id", ""), clock())
                return RedirectResponse("/", status_code=303)
            decision = queue.decide(reviewer, form.get("listing_id", ""), verdict,
                                    form.get("text_hash", ""), clock(),
                                    category=form.get("category", "").strip()[:200] or None,
                                    reason=form.get("reason", "").strip()[:1000])
        except _Forbidden as exc:
            return refuse(request, exc.status, str(exc))
        except ReviewError as exc:
            return refuse(request, exc.status, str(exc))
        if not await _record(decision):
            return refuse(request, 503, "the decision could not be recorded: try again")
        request.session["message"] = f"{verdict}: {decision.listing_id}"
        return RedirectResponse("/", status_code=303)

    async def undo(request: Request) -> Response:
        try:
            reviewer, _ = await checked_form(request)
            decision = queue.undo(reviewer, clock())
        except _Forbidden as exc:
            return refuse(request, exc.status, str(exc))
        except ReviewError as exc:
            return refuse(request, exc.status, str(exc))
        if not await _record(decision):
            return refuse(request, 503, "the undo could not be recorded: try again")
        queue.lease(reviewer, decision.listing_id, clock())
        request.session["message"] = f"undone: {decision.listing_id}"
        return RedirectResponse("/", status_code=303)

    async def _record(decision: ModerationDecision) -> bool:
        try:
            await desk.record(decision)
        except Exception:
            log.exception("publishing decision %s failed", decision.decision_id)
            queue.abandon(decision.listing_id)
            return False
        except BaseException:  # cancelled: if the broker has it, it is read back and applied
            queue.abandon(decision.listing_id)
            raise
        queue.apply_decision(decision)
        item = queue.items.get(decision.listing_id)
        if item is not None:
            metrics.observe(decision, item)
        return True

    async def models_page(request: Request) -> Response:
        if reviewer_of(request) is None:
            return RedirectResponse("/login", status_code=303)
        return render(request, "models.html", reports=model_reports(queue))

    async def model_page(request: Request) -> Response:
        if reviewer_of(request) is None:
            return RedirectResponse("/login", status_code=303)
        version = request.path_params["version"]
        report = next((r for r in model_reports(queue) if r.version == version), None)
        if report is None:
            return refuse(request, 404, "no detections from this model version")
        return render(request, "model.html", report=report, bars=bar_chart(report))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "queue_depth": queue.depth(),
                             "seeds": len(queue.seeds)})

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    async def headers(request: Request, call_next) -> Response:
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    given = settings.session_secret.get_secret_value() if settings.session_secret else ""
    secret = given or secrets.token_urlsafe(32)
    app = Starlette(
        routes=[
            Route("/", queue_page),
            Route("/login", login_page, methods=["GET"]),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/decide", decide, methods=["POST"]),
            Route("/undo", undo, methods=["POST"]),
            Route("/models", models_page),
            Route("/models/{version:path}", model_page),
            Route("/health", health),
            Route("/metrics", metrics_endpoint),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=headers),
                    Middleware(SessionMiddleware, secret_key=secret,
                               session_cookie="qexplorer_review", max_age=12 * 3600,
                               same_site="strict", https_only=settings.secure_cookies)],
    )
    return app


def _csrf(request: Request) -> str:
    """The session's CSRF token, created on first use."""
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = auth.new_token()
    return token
