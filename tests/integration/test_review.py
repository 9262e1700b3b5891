"""The review service on the real broker, with a real worker: moderators decide in a real
browser (Playwright driving Debian's Chromium), decisions and confirmed items land on their
topics, a confirmed listing is explored as a seed, and a killed service loses and doubles
nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from qexplorer.harness.processes import spawn
from qexplorer.kafka.io import publish, read_to_end
from qexplorer.review.auth import hash_password
from schemas.codec import SchemaError, decode
from schemas.models import DeadLetter, ListingUpsert, ModerationDecision, ToxicItem
from schemas.topics import LISTINGS, TOXIC_ITEMS
from tests.integration.conftest import free_port, read_records, wait_for

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("QEXPLORER_CHROMIUM", "/usr/bin/chromium")
PASSWORD = "correct horse battery"
USERS = {"alice": hash_password(PASSWORD), "bob": hash_password(PASSWORD)}

#: The confirmed seed, and what its queries find: a sibling (toxic), an innocent listing that
#: shares its words, and a hostile title. The sibling's own text leads to a second-generation
#: listing that the seed's queries cannot find.
SEED = ToxicItem(id="s-ivory", title="Carved mammoth ivory pendant", category="wildlife",
                 description="Genuine tusk material, hand carved ivory pendant, old stock",
                 confirmed_by="moderator")
SIBLING = ListingUpsert(id="l-bangle", title="Ivory bangle and rhino horn powder",
                        description="Genuine tusk bangle, rhino horn powder, discreet shipping")
INNOCENT = ListingUpsert(id="l-dress", title="Ivory colored wedding dress size 38",
                         description="Worn once, ivory satin with lace sleeves, pickup only")
HOSTILE = ListingUpsert(
    id="l-script", title="<script>window.__pwned=1</script> ivory tusk carving",
    description='Hand carved <b>tusk</b> figure <img src=x onerror="window.__pwned=2">')
SECOND = ListingUpsert(id="l-rhino", title="Rhino horn powder 50g",
                       description="Pure powder, discreet shipping worldwide, pay by crypto")
OTHERS = [ListingUpsert(id=f"l-other-{i}", title=title) for i, title in enumerate(
    ["Oak bookshelf, five shelves", "Children's bicycle 16 inch", "Espresso machine, barely used"])]
LISTINGS_ = [ListingUpsert(id=SEED.id, title=SEED.title, description=SEED.description),
             SIBLING, INNOCENT, HOSTILE, SECOND, *OTHERS]


def start_review(cluster, name: str = "review", **settings: object) -> tuple[subprocess.Popen, str]:
    """A ``qexplorer review`` process on this cluster's topics; returns it and its URL once
    it answers."""
    port = free_port()
    env = {**cluster.settings.to_env(), **cluster.worker_env,
           "QEXPLORER_REVIEW_USERS": orjson.dumps(USERS).decode(),
           "QEXPLORER_REVIEW_PORT": str(port),
           "QEXPLORER_REVIEW_SESSION_SECRET": "integration-test-secret",
           **{f"QEXPLORER_REVIEW_{k.upper()}": str(v) for k, v in settings.items()}}
    # stopped with the cluster's workers
    process = cluster.adopt(name, spawn(["review"], env, cluster.log_path(name)))
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert process.poll() is None, cluster.log(name)
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(answers, 90, 0.5, lambda: f"the review service did not answer: {cluster.log(name)}")
    return process, url


def in_thread(function, *args):
    """Call ``function`` in another thread: Playwright's sync API runs an event loop in this
    one, where ``asyncio.run`` (the topic reads) cannot."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(function, *args).result()


def depth(url: str) -> int:
    return httpx.get(f"{url}/health", timeout=5).json()["queue_depth"]


def publish_marketplace(cluster) -> None:
    settings = cluster.settings
    asyncio.run(publish(settings.kafka, settings.topics, LISTINGS, LISTINGS_))
    asyncio.run(publish(settings.kafka, settings.topics, TOXIC_ITEMS, [SEED]))


def decisions(cluster) -> list[ModerationDecision]:
    """The decisions on the topic that satisfy the contract (one test adds a bad one)."""
    records = []
    for message in asyncio.run(read_to_end(cluster.settings.kafka,
                                           cluster.settings.topics.decisions)):
        with contextlib.suppress(SchemaError):
            records.append(decode(ModerationDecision, message.value))
    return records


def latest_decisions(cluster) -> dict[str, str]:
    records = decisions(cluster)
    latest: dict[str, ModerationDecision] = {}
    for record in records:
        if record.decision == "undo":
            latest.pop(record.listing_id, None)
        else:
            latest[record.listing_id] = record
    return {k: v.decision for k, v in latest.items()}


def toxic_ids(cluster) -> Counter:
    return Counter(t.id for t in read_records(cluster, cluster.settings.topics.toxic_items,
                                              ToxicItem))


def test_moderators_decide_in_a_real_browser_and_a_confirmed_listing_becomes_a_seed(
        cluster, tmp_path):
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("QEXPLORER_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    cluster.start_worker()
    publish_marketplace(cluster)
    _, url = start_review(cluster, undo_s=1)
    wait_for(lambda: depth(url) >= 3, 120, 0.5, "the seed's detections never reached the queue")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(f"{url}/")
            assert page.url.endswith("/login")
            page.fill("input[name=name]", "alice")
            page.fill("input[name=password]", PASSWORD)
            with page.expect_navigation():
                page.click("form.login button[type=submit]")

            def current() -> str | None:
                return page.get_attribute("article.item", "data-listing", timeout=5000)

            def act(key: str) -> None:
                with page.expect_navigation():
                    page.keyboard.press(key)

            assert current() == INNOCENT.id  # found by every query at rank 1: first
            assert page.locator("article.item mark").first.inner_text().lower() == "ivory"
            assert SEED.title in page.inner_text("ul.seeds")
            with page.expect_navigation():
                page.click("button.reject")
            assert current() != INNOCENT.id
            act("z")  # undo: the innocent listing is back, with this reviewer
            assert current() == INNOCENT.id
            act("r")

            seen_hostile = confirmed = False
            for _ in range(6):
                if seen_hostile and confirmed:
                    break
                listing = current()
                if listing == HOSTILE.id:
                    seen_hostile = True
                    title = page.inner_text("h1.title")
                    assert "<script>window.__pwned=1</script>" in title  # shown as text
                    assert page.evaluate("window.__pwned") is None  # never run
                    assert page.locator("article.item img").count() == 0
                    act("s")
                elif listing == SIBLING.id:
                    act("c")
                    confirmed = True
                else:
                    act("s")
            assert seen_hostile and confirmed

            # the confirm becomes a seed; the worker explores it; its own find reaches the queue
            wait_for(lambda: in_thread(toxic_ids, cluster)[SIBLING.id] == 1, 60, 0.5,
                     "the confirmed listing never became a toxic item")
            confirmed_item = next(t for t in in_thread(
                read_records, cluster, cluster.settings.topics.toxic_items, ToxicItem)
                if t.id == SIBLING.id)
            assert confirmed_item.confirmed_by == "alice"
            assert confirmed_item.description == SIBLING.description

            def second_generation_shown() -> bool:
                page.goto(f"{url}/")
                if current() == HOSTILE.id:  # the only item left until the seed's finds come
                    act("s")
                return current() == SECOND.id

            wait_for(second_generation_shown, 120, 1.0,
                     lambda: f"the seed's own detection never reached the queue: {cluster.log()}")
            assert SIBLING.title in page.inner_text("ul.seeds")

            page.goto(f"{url}/models")
            with page.expect_navigation():
                page.click("table.models a")
            figures = page.inner_text("dl.figures")
            assert re.search(r"confirmed\s+1\b", figures) and re.search(r"rejected\s+1\b",
                                                                       figures)
            assert "0.500" in figures
            assert page.locator("svg.chart rect.confirmed").count() >= 1
            page.screenshot(path=str(shots / "review-model.png"), full_page=True)
        finally:
            browser.close()

    assert latest_decisions(cluster) == {INNOCENT.id: "reject", SIBLING.id: "confirm"}


class Reviewer:
    """A reviewer on plain HTTP: signs in, reads the current item, decides."""

    def __init__(self, url: str, name: str) -> None:
        self.http = httpx.Client(base_url=url, follow_redirects=True, timeout=10)
        page = self.http.get("/login").text
        self.http.post("/login", data={"name": name, "password": PASSWORD,
                                       "csrf": self._token(page)}).raise_for_status()

    @staticmethod
    def _token(page: str) -> str:
        return re.search(r'name="csrf" value="([^"]+)"', page).group(1)

    def decide(self, decision: str) -> str:
        """Decide the current item; returns its listing id."""
        page = self.http.get("/").text
        listing = re.search(r'data-listing="([^"]+)"', page).group(1)
        digest = re.search(r'name="text_hash" value="([^"]+)"', page).group(1)
        response = self.http.post("/decide", data={
            "csrf": self._token(page), "listing_id": listing, "decision": decision,
            "text_hash": digest})
        response.raise_for_status()
        return listing


def test_a_killed_review_service_loses_and_doubles_no_decision(cluster):
    cluster.start_worker()
    publish_marketplace(cluster)
    publish_a_bad_decision(cluster)
    process, url = start_review(cluster, undo_s=3)
    wait_for(lambda: depth(url) >= 3, 120, 0.5, "the seed's detections never reached the queue")
    before = depth(url)
    alice = Reviewer(url, "alice")
    rejected = alice.decide("reject")
    confirmed = alice.decide("confirm")
    process.send_signal(signal.SIGKILL)  # inside the confirm's undo window
    process.wait(10)

    _, url = start_review(cluster, name="review-2", undo_s=3)
    assert depth(url) == before - 2
    assert latest_decisions(cluster) == {rejected: "reject", confirmed: "confirm"}
    assert len(decisions(cluster)) == 2
    # the confirm whose undo window the first process never saw end is published once
    wait_for(lambda: toxic_ids(cluster)[confirmed] == 1, 60, 0.5, "the confirm was lost")
    bob = Reviewer(url, "bob")
    assert bob.decide("unsure") not in (rejected, confirmed)
    assert toxic_ids(cluster)[confirmed] == 1
    dead = [m for m in read_records(cluster, cluster.settings.topics.dead_letter, DeadLetter)
            if m.stage == "review-decode"]
    assert len(dead) == 1, "a bad decision record is dead-lettered once, across restarts"


def publish_a_bad_decision(cluster) -> None:
    """A record on moderation-decisions that fails its contract."""

    async def send() -> None:
        producer = AIOKafkaProducer(**cluster.settings.kafka.client_kwargs())
        await producer.start()
        try:
            await producer.send_and_wait(cluster.settings.topics.decisions, key=b"x",
                                         value=b'{"schema_version": 1, "decision": "maybe"}')
        finally:
            await producer.stop()

    asyncio.run(send())

