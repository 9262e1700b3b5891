"""The review pages through Starlette's test client, with a fake desk and a fake clock: hostile
listings shown as text, CSRF and sign-in on every form, leases between two reviewers, sign-in
throttling, a broker failure, security headers and cookie flags, metrics and model pages."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
from pydantic import ValidationError
from starlette.applications import Starlette

from qexplorer.config import ReviewSettings
from qexplorer.review.auth import hash_password
from qexplorer.review.queue import ReviewQueue
from qexplorer.review.web import create_app
from schemas.models import Detection, ModerationDecision, detection_key

if TYPE_CHECKING:
    from starlette.testclient import TestClient

pytestmark = pytest.mark.filterwarnings(
    "ignore::starlette.exceptions.StarletteDeprecationWarning")

PASSWORD = "correct horse battery staple"
HASH = hash_password(PASSWORD)  # scrypt is slow: once per module
T0 = 1_700_000_000.0
SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
ODD_VERSION = 'kw/1 <b>"x"</b>&y?z#w'


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Desk:
    """Records decisions; the first ``failures`` calls raise, as a broker that is down."""

    def __init__(self, failures: int = 0) -> None:
        self.records: list[ModerationDecision] = []
        self.failures = failures

    async def record(self, decision: ModerationDecision) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker unavailable")
        self.records.append(decision)


def det(listing: str, rank: int = 1, title: str = "", description: str = "",
        version: str = "kw-1", queries: tuple = ("ivory",)) -> Detection:
    return Detection(key=detection_key("s1", listing, version), seed_id="s1", listing_id=listing,
                     listing_title=title or f"ivory item {listing}",
                     listing_description=description, queries=list(queries), best_rank=rank,
                     best_score=1.0, extractor="keywords", model_version=version,
                     prompt_version="p1", detected_at=datetime.fromtimestamp(T0 - 60, UTC))


@dataclass
class Service:
    queue: ReviewQueue
    desk: Desk
    clock: Clock = field(default_factory=Clock)
    secure_cookies: bool = False

    def __post_init__(self) -> None:
        settings = ReviewSettings(users={"alice": HASH, "bob": HASH}, session_secret="secret",
                                  secure_cookies=self.secure_cookies, lease_s=300, undo_s=30)
        self.app: Starlette = create_app(self.queue, self.desk, settings, clock=self.clock)

    def client(self, name: str | None = None, address: str = "testclient") -> TestClient:
        from starlette.testclient import TestClient  # warns on import: under pytestmark

        client = TestClient(self.app, client=(address, 50000))
        if name is not None:
            assert sign_in(client, name).status_code == 303
        return client


def service_of(*detections: Detection, desk: Desk | None = None, **kwargs) -> Service:
    queue = ReviewQueue(lease_s=300, undo_s=30)
    for detection in detections or (det("L1", 1), det("L2", 2), det("L3", 3)):
        queue.apply_detection(detection)
    return Service(queue, desk or Desk(), **kwargs)


def csrf(client: TestClient) -> str:
    return field_of(client.get("/login").text, "csrf")


def field_of(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, f"no {name} field on the page"
    return html.unescape(found.group(1))


def sign_in(client: TestClient, name: str = "alice", password: str = PASSWORD):
    return client.post("/login", data={"csrf": csrf(client), "name": name, "password": password},
                       follow_redirects=False)


def decide(client: TestClient, verdict: str = "confirm", **overrides: str):
    """Post the decision form of the item on the reviewer's page (fields can be overridden)."""
    page = client.get("/").text
    form = {"csrf": field_of(page, "csrf"), "listing_id": field_of(page, "listing_id"),
            "text_hash": field_of(page, "text_hash"), "decision": verdict, **overrides}
    return client.post("/decide", data={k: v for k, v in form.items() if v is not None},
                       follow_redirects=False)


def shown(client: TestClient) -> str | None:
    found = re.search(r'data-listing="([^"]*)"', client.get("/").text)
    return html.unescape(found.group(1)) if found else None


def test_a_hostile_listing_is_shown_as_text() -> None:
    listing = 'l-"><img src=x onerror=alert(2)>'
    service = service_of(det(listing, title=f"{SCRIPT} ivory", description=IMG,
                             version="<i>v</i>", queries=("ivory", "alert")))
    alice = service.client("alice")
    page = alice.get("/").text
    assert shown(alice) == listing
    for raw in ("<script>alert", "<img src=x", "<i>v</i>"):
        assert raw not in page
    assert "&lt;script&gt;<mark>alert</mark>(1)&lt;/script&gt; <mark>ivory</mark>" in page
    assert "&lt;img src=x onerror=<mark>alert</mark>(1)&gt;" in page
    assert decide(alice).status_code == 303
    assert [r.listing_id for r in service.desk.records] == [listing]
    page = alice.get("/").text  # the note names the listing decided
    assert "<img src=x" not in page and "onerror=alert(2)&gt;" in page
    form = {"csrf": csrf(alice), "listing_id": SCRIPT, "text_hash": "x", "decision": "reject"}
    refused = alice.post("/decide", data=form)  # the id is reflected in the error message
    assert refused.status_code == 404 and SCRIPT not in refused.text


FORGED = [("/decide", {"decision": "confirm"}), ("/decide", {"decision": "skip"}),
          ("/undo", {}), ("/logout", {}), ("/login", {"name": "alice", "password": PASSWORD})]


@pytest.mark.parametrize("token", ["missing", "another session's"])
@pytest.mark.parametrize(("path", "form"), FORGED, ids=[f"{p}-{f}" for p, f in FORGED])
def test_a_form_without_the_sessions_csrf_token_is_refused(path, form, token) -> None:
    service = service_of()
    alice, bob = service.client("alice"), service.client("bob")
    assert decide(alice, "reject").status_code == 303  # something alice could undo
    held = shown(alice)
    before = (list(service.desk.records), dict(service.queue.decisions))
    victim = alice if path != "/login" else service.client()
    page = victim.get("/login").text
    data = {**form, "listing_id": held, "text_hash": field_of(alice.get("/").text, "text_hash")}
    if token != "missing":
        data["csrf"] = csrf(bob)
        assert data["csrf"] != field_of(page, "csrf")
    response = victim.post(path, data=data, follow_redirects=False)
    assert response.status_code == 403
    assert (service.desk.records, service.queue.decisions) == before
    assert service.queue.items[held].lease.reviewer == "alice"  # not skipped
    assert service.queue.last_decision("alice") is not None  # not undone
    signed_in = victim.get("/", follow_redirects=False).status_code == 200
    assert signed_in == (victim is alice)  # not signed out, nor signed in


def test_deciding_without_signing_in_is_refused() -> None:
    service = service_of()
    stranger = service.client()
    form = {"csrf": csrf(stranger), "listing_id": "L1", "decision": "confirm",
            "text_hash": service.queue.items["L1"].text_hash}
    for path in ("/decide", "/undo"):
        assert stranger.post(path, data=form, follow_redirects=False).status_code == 401
    assert stranger.get("/", follow_redirects=False).headers["location"] == "/login"
    assert service.desk.records == [] and service.queue.depth() == 3
    assert service.queue.leases(T0) == 0


def test_a_decision_for_an_unknown_listing_is_not_found() -> None:
    service = service_of()
    alice = service.client("alice")
    assert decide(alice, listing_id="nope").status_code == 404
    assert decide(alice, "skip", listing_id="nope").status_code == 404
    assert service.desk.records == [] and service.queue.depth() == 3


def test_two_reviewers_never_get_or_decide_the_same_item() -> None:
    service = service_of(det("L1"))
    alice, bob = service.client("alice"), service.client("bob")
    assert shown(alice) == "L1"
    assert shown(bob) is None and "Nothing to review" in bob.get("/").text
    forged = {"csrf": csrf(bob), "listing_id": "L1", "decision": "reject",
              "text_hash": service.queue.items["L1"].text_hash}
    refused = bob.post("/decide", data=forged, follow_redirects=False)
    assert refused.status_code == 409 and service.desk.records == []
    assert decide(alice).status_code == 303
    assert [(r.reviewer, r.decision) for r in service.desk.records] == [("alice", "confirm")]


def test_an_item_goes_to_another_reviewer_once_its_lease_expires() -> None:
    service = service_of(det("L1"))
    alice, bob = service.client("alice"), service.client("bob")
    assert shown(alice) == "L1" and shown(bob) is None
    service.clock.now += 301
    assert shown(bob) == "L1" and shown(alice) is None
    assert decide(bob, "reject").status_code == 303


def test_wrong_passwords_slow_down_who_fails_not_the_reviewer() -> None:
    service = service_of()
    attacker = service.client(address="10.0.0.66")
    assert sign_in(attacker, "mallory").status_code == 401
    for _ in range(3):  # the first few failures cost nothing more
        assert sign_in(attacker, "alice", "wrong").status_code == 401
    throttled = sign_in(attacker, "alice")  # even the right password waits now
    assert throttled.status_code == 429 and "try again in 1 s" in throttled.text
    service.clock.now += 1
    assert sign_in(attacker, "alice", "wrong").status_code == 401
    assert "try again in 2 s" in sign_in(attacker, "alice").text  # the wait doubles
    # the reviewer, from their own address, signs in at once: nobody can lock them out
    assert sign_in(service.client(address="10.0.0.7"), "alice").status_code == 303
    assert sign_in(attacker, "bob").status_code == 303  # another name is not held back
    service.clock.now += 2
    assert sign_in(attacker, "alice").status_code == 303
    assert shown(attacker) == "L1"


def test_signing_out_ends_the_session_even_for_a_copy_of_its_cookie() -> None:
    service = service_of()
    alice = service.client("alice")
    cookie = alice.cookies.get("qexplorer_review")
    assert shown(alice) == "L1"
    page = alice.get("/").text
    assert alice.post("/logout", data={"csrf": field_of(page, "csrf")},
                      follow_redirects=False).status_code == 303
    replayed = service.client()
    replayed.cookies.set("qexplorer_review", cookie)
    assert replayed.get("/", follow_redirects=False).status_code == 303  # to the sign-in page
    assert replayed.post("/decide", data={"csrf": "x", "decision": "reject", "listing_id": "L1",
                                          "text_hash": "x"}).status_code == 401
    # a session also ends with its age, and with a restart of the service (nothing on disk)
    bob = service.client("bob")
    service.clock.now += 12 * 3600
    assert bob.get("/", follow_redirects=False).status_code == 303
    carol = service.client("alice")
    restarted = Service(service.queue, service.desk, clock=service.clock)
    after = restarted.client()
    after.cookies.set("qexplorer_review", carol.cookies.get("qexplorer_review"))
    assert after.get("/", follow_redirects=False).status_code == 303


def test_settings_refuse_a_password_given_in_place_of_its_hash() -> None:
    with pytest.raises(ValidationError) as refused:
        ReviewSettings(users={"alice": "hunter2"})
    assert "hash-password" in str(refused.value) and "hunter2" not in str(refused.value)
    assert ReviewSettings(users={"alice": HASH}).users == {"alice": HASH}


def test_a_decision_the_broker_did_not_take_is_not_made() -> None:
    service = service_of(desk=Desk(failures=1))
    alice = service.client("alice")
    failed = decide(alice)
    assert failed.status_code == 503 and "could not be recorded" in failed.text
    assert service.desk.records == [] and service.queue.depth() == 3
    assert "L1" not in service.queue.decisions and shown(alice) == "L1"
    assert decide(alice).status_code == 303
    assert [r.listing_id for r in service.desk.records] == ["L1"]
    assert service.queue.depth() == 2


def test_undo_puts_the_listing_back_with_the_reviewer() -> None:
    service = service_of()
    alice, bob = service.client("alice"), service.client("bob")
    assert decide(alice).status_code == 303
    assert shown(alice) == "L2" and shown(bob) == "L3"
    undone = alice.post("/undo", data={"csrf": csrf(alice)}, follow_redirects=False)
    assert undone.status_code == 303 and shown(alice) == "L1"
    assert service.queue.items["L2"].lease is None  # one item at a time: L2 is free again
    assert [r.decision for r in service.desk.records] == ["confirm", "undo"]
    assert service.queue.depth() == 3 and "L1" not in service.queue.decisions


@pytest.mark.parametrize("path", ["/", "/login", "/health", "/metrics", "/static/keys.js",
                                  "/nowhere"])
def test_responses_carry_the_security_headers(path) -> None:
    response = service_of().client().get(path, follow_redirects=False)
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_refusals_carry_the_security_headers_too() -> None:
    alice = service_of(desk=Desk(failures=1)).client("alice")
    response = decide(alice)
    assert response.status_code == 503 and response.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("secure", [False, True])
def test_the_session_cookie_is_http_only_and_same_site_strict(secure) -> None:
    client = service_of(secure_cookies=secure).client()
    cookie = client.get("/login").headers["set-cookie"].lower()
    assert cookie.startswith("qexplorer_review=")
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert ("; secure" in cookie) == secure


def metric_values(text: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def test_metrics_show_the_queue_depth_and_decisions_by_kind() -> None:
    service = service_of()
    alice = service.client("alice")
    before = metric_values(alice.get("/metrics").text)
    assert before["qexplorer_review_queue_depth"] == 3
    assert decide(alice, "confirm").status_code == 303
    assert decide(alice, "reject").status_code == 303
    shown(alice)  # L3 leased
    values = metric_values(alice.get("/metrics").text)
    assert values["qexplorer_review_queue_depth"] == 1
    assert values["qexplorer_review_leases"] == 1
    assert values['qexplorer_review_decisions_total{decision="confirm"}'] == 1
    assert values['qexplorer_review_decisions_total{decision="reject"}'] == 1
    assert values['qexplorer_review_decided_listings{decision="reject"}'] == 1
    assert values["qexplorer_review_latency_seconds_count"] == 2


def test_model_pages_render_and_escape_odd_version_names() -> None:
    service = service_of(det("L1", version=ODD_VERSION), det("L2", version="kw-2"))
    alice = service.client("alice")
    assert decide(alice, "confirm").status_code == 303
    page = alice.get("/models")
    assert page.status_code == 200 and '<b>"x"' not in page.text
    assert "kw/1 &lt;b&gt;&#34;x&#34;&lt;/b&gt;&amp;y?z#w" in page.text
    links = [html.unescape(h) for h in re.findall(r'href="(/models/[^"]+)"', page.text)]
    assert len(links) == 2
    for link in links:
        report = alice.get(link)
        assert report.status_code == 200 and "<b>" not in report.text
    odd = alice.get(next(link for link in links if "kw-2" not in link)).text
    assert "<code>kw/1 &lt;b&gt;&#34;x&#34;&lt;/b&gt;&amp;y?z#w</code>" in odd
    assert "1 confirmed of 1 reviewed" in odd
    assert alice.get("/models/unknown").status_code == 404
    stranger = service.client()
    assert stranger.get("/models", follow_redirects=False).headers["location"] == "/login"
    assert stranger.get("/models/kw-2", follow_redirects=False).status_code == 303


def test_the_page_says_what_was_decided_by_title_where_each_query_came_from_and_has_an_icon(
        ) -> None:
    service = service_of()
    alice = service.client("alice")
    assert "<th>from seed</th>" in alice.get("/").text
    assert "<code>s1</code>" in alice.get("/").text
    assert decide(alice, "reject").status_code == 303
    assert "reject: ivory item L1 (L1)" in alice.get("/").text
    icon = alice.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"


def test_enter_in_a_field_has_no_decision_to_submit() -> None:
    """The decision form's default button (what Enter presses) is disabled and carries no
    decision; a form posted without one decides nothing."""
    service = service_of()
    alice = service.client("alice")
    page = alice.get("/").text
    first = re.search(r'<form method="post" action="/decide"[^>]*>.*?<button([^>]*)>', page,
                      re.S)
    assert first and "disabled" in first.group(1) and 'value=""' in first.group(1)
    assert decide(alice, "").status_code == 400 and service.desk.records == []
