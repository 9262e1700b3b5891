"""The review pages' handlers: one plain async method a route, over a
:class:`~qexplorer.review.queue.ReviewQueue`.

Server-rendered Jinja2 templates (autoescaped: a listing is hostile input and shows as text).
Reviewers sign in with the credentials in settings; who is signed in is kept here
(``qexplorer.review.sessions``: the cookie carries a session id, which signing out closes),
and failed sign-ins slow down whoever fails, by client address and name. Every form carries
the session's CSRF token, checked before anything else is read from it.

A decision is recorded in three steps that never interleave with another request on the same
listing: the queue builds the record and holds the listing, the :class:`Desk` publishes it
(and waits for the broker), then the queue applies it. If publishing fails, the listing is
released and the reviewer sees an error: a decision is either on the topic or not made.

The routes, the session and the security headers are wired in ``qexplorer.review.web``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import jinja2
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from qexplorer.config import ReviewSettings
from qexplorer.review import auth
from qexplorer.review.metrics import ReviewMetrics
from qexplorer.review.present import bar_chart, highlight, model_reports, query_terms
from qexplorer.review.queue import VERDICTS, ReviewError, ReviewQueue
from qexplorer.review.sessions import Sessions, Throttle
from schemas.models import ModerationDecision

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
#: Items listed under "up next".
UP_NEXT = 10


class Desk(Protocol):
    """Where decisions go: the moderation-decisions topic, in the service."""

    async def record(self, decision: ModerationDecision) -> None:
        """Publish a decision and return once the broker has it (raise otherwise)."""
        ...


class Forbidden(Exception):
    """A request refused before it did anything: its HTTP status and the reviewer's reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def csrf_token(request: Request) -> str:
    """The session's CSRF token, created on first use."""
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = auth.new_token()
    return token


class Pages:
    """The handlers of the review service's routes."""

    def __init__(self, queue: ReviewQueue, desk: Desk, settings: ReviewSettings,
                 metrics: ReviewMetrics, clock: Callable[[], float]) -> None:
        self.queue = queue
        self.desk = desk
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.templates = Jinja2Templates(env=jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True))
        self.sessions = Sessions()
        self.throttle = Throttle()

    # --- what every handler uses ---------------------------------------------------------------

    def render(self, request: Request, name: str, status: int = 200, **context) -> Response:
        """A template with the session's reviewer, the queue's depth and the CSRF token."""
        context.setdefault("reviewer", self.reviewer_of(request))
        context.setdefault("depth", self.queue.depth())
        return self.templates.TemplateResponse(
            request, name, {**context, "csrf": csrf_token(request)}, status_code=status)

    def refuse(self, request: Request, status: int, message: str) -> Response:
        """The error page."""
        return self.render(request, "error.html", status=status, message=message)

    def reviewer_of(self, request: Request) -> str | None:
        """The signed-in reviewer: the session is open and names one the settings still
        know."""
        name = self.sessions.reviewer(request.session.get("sid"), self.clock())
        return name if name in self.settings.users else None

    async def checked_form(self, request: Request, signed_in: bool = True
                           ) -> tuple[str, dict[str, str]]:
        """The reviewer and the form of a POST, or :class:`Forbidden`."""
        reviewer = self.reviewer_of(request)
        if signed_in and reviewer is None:
            raise Forbidden(401, "sign in first")
        form = await request.form()
        if not auth.token_matches(request.session.get("csrf"), form.get("csrf")):
            raise Forbidden(403, "this form has expired or did not come from this site: "
                                 "reload the page and try again")
        return reviewer or "", {k: str(v) for k, v in form.items()}

    async def record(self, decision: ModerationDecision) -> bool:
        """Publish a decision and apply it to the queue; False (the listing released) when
        the broker did not take it."""
        queue = self.queue
        try:
            await self.desk.record(decision)
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
            self.metrics.observe(decision, item)
        return True

    # --- signing in and out --------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        """GET /login."""
        return self.render(request, "login.html", error=None)

    async def login(self, request: Request) -> Response:
        """POST /login: whoever fails waits longer before their next try (by address and
        name); the reviewer signing in from elsewhere does not."""
        try:
            _, form = await self.checked_form(request, signed_in=False)
        except Forbidden as exc:
            return self.refuse(request, exc.status, str(exc))
        name, password = form.get("name", ""), form.get("password", "")
        address = request.client.host if request.client else "?"
        now = self.clock()
        wait = self.throttle.wait(address, name, now)
        if wait > 0:
            return self.render(request, "login.html", status=429,
                               error=f"too many failed attempts: try again in {wait:.0f} s")
        if not auth.authenticate(self.settings.users, name, password):
            self.throttle.failed(address, name, now)
            return self.render(request, "login.html", status=401,
                               error="wrong name or password")
        self.throttle.succeeded(address, name)
        self.sessions.close(request.session.get("sid"))
        request.session.clear()
        request.session.update(sid=self.sessions.open(name, now), csrf=auth.new_token())
        return RedirectResponse("/", status_code=303)

    async def logout(self, request: Request) -> Response:
        """POST /logout: the session ends here, so its cookie opens nothing afterwards."""
        try:
            await self.checked_form(request, signed_in=False)
        except Forbidden as exc:
            return self.refuse(request, exc.status, str(exc))
        self.sessions.close(request.session.get("sid"))
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    # --- the queue -----------------------------------------------------------------------------

    async def queue_page(self, request: Request) -> Response:
        """GET /: the reviewer's item (leased to them), what is up next, the last decision."""
        reviewer = self.reviewer_of(request)
        if reviewer is None:
            return RedirectResponse("/login", status_code=303)
        queue, now = self.queue, self.clock()
        item = queue.take(reviewer, now)
        last = queue.last_decision(reviewer, now)
        context = {"item": item, "up_next": [], "segments": {}, "priority": None,
                   "seeds": [], "last": last, "undo_left": None}
        if last is not None and last.decision == "confirm":  # until it becomes a seed
            context["undo_left"] = max(1, int(queue.undo_deadline(last) - now))
        if item is not None:
            terms = query_terms(item.queries)
            context.update(
                segments={"title": highlight(item.title, terms),
                          "description": highlight(item.description, terms)},
                priority=queue.priority(item),
                seeds=[(s, queue.seeds.get(s)) for s in item.seed_ids],
                seed_titles={s: queue.seeds[s].title for s in item.seed_ids
                             if s in queue.seeds},  # the query table names each query's seed
                findings=sorted(item.findings.values(), key=lambda d: d.best_rank),
                lease_left=int(item.lease.expires - now) if item.lease else 0)
        context["up_next"] = queue.upcoming(reviewer, now, UP_NEXT,
                                            exclude=item.listing_id if item else None)
        context["message"] = request.session.pop("message", None)
        return self.render(request, "queue.html", verdicts=VERDICTS, **context)

    async def decide(self, request: Request) -> Response:
        """POST /decide: a verdict on the reviewer's item, or skip it."""
        try:
            reviewer, form = await self.checked_form(request)
            verdict = form.get("decision", "")
            if verdict == "skip":
                self.queue.skip(reviewer, form.get("listing_id", ""), self.clock())
                return RedirectResponse("/", status_code=303)
            decision = self.queue.decide(
                reviewer, form.get("listing_id", ""), verdict, form.get("text_hash", ""),
                self.clock(), category=form.get("category", "").strip()[:200] or None,
                reason=form.get("reason", "").strip()[:1000])
        except (Forbidden, ReviewError) as exc:
            return self.refuse(request, exc.status, str(exc))
        if not await self.record(decision):
            return self.refuse(request, 503, "the decision could not be recorded: try again")
        request.session["message"] = f"{verdict}: {self._title(decision.listing_id)}"
        return RedirectResponse("/", status_code=303)

    async def undo(self, request: Request) -> Response:
        """POST /undo: withdraw the reviewer's last decision inside its window."""
        try:
            reviewer, _ = await self.checked_form(request)
            decision = self.queue.undo(reviewer, self.clock())
        except (Forbidden, ReviewError) as exc:
            return self.refuse(request, exc.status, str(exc))
        if not await self.record(decision):
            return self.refuse(request, 503, "the undo could not be recorded: try again")
        self.queue.lease(reviewer, decision.listing_id, self.clock())
        request.session["message"] = f"undone: {self._title(decision.listing_id)}"
        return RedirectResponse("/", status_code=303)

    def _title(self, listing_id: str) -> str:
        """How a message names a listing: its title (and id)."""
        item = self.queue.items.get(listing_id)
        title = " ".join(item.title.split())[:80] if item is not None else ""
        return f"{title} ({listing_id})" if title else listing_id

    # --- the models' pages ---------------------------------------------------------------------

    async def models_page(self, request: Request) -> Response:
        """GET /models: review precision by model version."""
        if self.reviewer_of(request) is None:
            return RedirectResponse("/login", status_code=303)
        return self.render(request, "models.html", reports=model_reports(self.queue))

    async def model_page(self, request: Request) -> Response:
        """GET /models/{version}."""
        if self.reviewer_of(request) is None:
            return RedirectResponse("/login", status_code=303)
        version = request.path_params["version"]
        report = next((r for r in model_reports(self.queue) if r.version == version), None)
        if report is None:
            return self.refuse(request, 404, "no detections from this model version")
        return self.render(request, "model.html", report=report, bars=bar_chart(report))

    # --- operations ----------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        """GET /health."""
        return JSONResponse({"status": "ok", "queue_depth": self.queue.depth(),
                             "seeds": len(self.queue.seeds)})

    async def favicon(self, request: Request) -> Response:
        """GET /favicon.ico: the service's icon (browsers ask on every page)."""
        return FileResponse(HERE / "static" / "favicon.svg", media_type="image/svg+xml")

    async def metrics_page(self, request: Request) -> Response:
        """GET /metrics (Prometheus)."""
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4")
