"""A moderator's working day in a real browser (Playwright driving Debian's Chromium) against
the real review service on the real broker: Enter in a field, undo after a restart and after
its window, what "up next" promises, a blank category, signing out, and a stranger who tries
a reviewer's name.

The queue is filled by publishing detections directly (the worker's part is tested in
``test_review.py``): what is under test here is the service and its pages.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
import pytest
from aiokafka.partitioner import DefaultPartitioner

from qexplorer.kafka.io import publish
from schemas.models import Detection, ListingUpsert, ModerationDecision, ToxicItem, detection_key
from schemas.topics import DETECTIONS, LISTINGS, MODERATION_DECISIONS, TOXIC_ITEMS
from tests.integration.conftest import read_records, wait_for
from tests.integration.test_review import CHROMIUM, PASSWORD, depth, in_thread, start_review

pytestmark = pytest.mark.integration

SEED = ToxicItem(id="s-snow", title="❄️ 冰糖 出售 premium snow, discreet", category="drugs",
                 description="Colombian snow ❄️❄️ 冰糖, vacuum sealed, telegram @frosty_plug",
                 confirmed_by="moderator")
#: What the seed's queries found, best first (rank 1..n): disguised in emoji and Chinese.
FOUND = [
    ListingUpsert(id="l-candy", title="冰糖 ❄️ 高纯度 rock candy 500g",
                  description="纯度高 ❄️ 私聊 telegram @frosty_plug, 同城 discreet"),
    ListingUpsert(id="l-skis", title="Snow skis 170 cm, used two seasons",
                  description="Rossignol ❄️ skis with bindings, pickup only"),
    ListingUpsert(id="l-sugar", title="冰糖 rock sugar for tea, 1 kg 🍵",
                  description="Yellow rock sugar from Yunnan, sealed bag"),
    ListingUpsert(id="l-globe", title="Snow globe ❄️ with a tiny house",
                  description="Glass, 10 cm, music box base"),
]


def _detection(listing: ListingUpsert, rank: int) -> Detection:
    return Detection(key=detection_key(SEED.id, listing.id, "kw-1"), seed_id=SEED.id,
                     listing_id=listing.id, listing_title=listing.title,
                     listing_description=listing.description,
                     queries=["冰糖", "snow ❄️", "@frosty_plug"], best_rank=rank,
                     best_score=10.0 - rank, extractor="keywords", model_version="kw-1",
                     prompt_version="p1")


def fill(cluster, found: list[ListingUpsert] = FOUND) -> None:
    """The seed, the listings and the seed's detections of them, on the cluster's topics."""
    settings = cluster.settings

    def send() -> None:
        for spec, records in ((TOXIC_ITEMS, [SEED]), (LISTINGS, found), (DETECTIONS, [
                _detection(listing, rank) for rank, listing in enumerate(found, 1)])):
            asyncio.run(publish(settings.kafka, settings.topics, spec, records))

    in_thread(send)


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def desk(cluster):
    """A review service (undo window 4 s) over a filled queue: (cluster, url)."""
    fill(cluster)
    _, url = start_review(cluster, undo_s=4)
    wait_for(lambda: depth(url) == len(FOUND), 60, 0.5, "the detections never reached the queue")
    return cluster, url


def sign_in(browser, url: str, name: str = "alice"):
    """A new browser context signed in as ``name``; its page, on the queue."""
    page = browser.new_context(viewport={"width": 1100, "height": 900}).new_page()
    page.goto(f"{url}/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.press("input[name=password]", "Enter")
    assert page.url == f"{url}/", page.content()
    return page


def current(page) -> str | None:
    return page.get_attribute("article.item", "data-listing", timeout=5000)


def press(page, key: str) -> None:
    with page.expect_navigation():
        page.keyboard.press(key)


def decisions(cluster) -> list[ModerationDecision]:
    return in_thread(read_records, cluster, cluster.settings.topics.decisions,
                     ModerationDecision)


def test_enter_in_the_reason_field_confirms_nothing(desk, browser):
    cluster, url = desk
    page = sign_in(browser, url)
    shown = current(page)
    page.fill("input[name=reason]", "looks like rock candy to me")
    page.press("input[name=reason]", "Enter")
    page.press("input[name=category]", "Enter")
    page.wait_for_timeout(1500)  # a submission would have navigated by now
    assert page.url == f"{url}/" and current(page) == shown
    assert page.input_value("input[name=reason]") == "looks like rock candy to me"
    assert decisions(cluster) == []
    with page.expect_navigation():  # the buttons still decide
        page.click("button[value=reject]")
    assert [d.decision for d in decisions(cluster)] == ["reject"]


def _partition(listing_id: str, partitions: int) -> int:
    every = list(range(partitions))
    return DefaultPartitioner()(listing_id.encode(), every, every)


def test_undo_after_a_restart_withdraws_the_last_decision_made(cluster, browser):
    """Reject A, then mark B unsure; A's partition of the decisions topic holds megabytes of
    older decisions (more than a fetch brings of a partition), so a restart's rebuild reads
    B's record long before A's: the page must still offer B, and undo withdraw B."""
    partitions = cluster.settings.topic.partitions
    pool = [ListingUpsert(id=f"l-lot-{i}", title=f"冰糖 lot {i} ❄️") for i in range(40)]
    a = next(x for x in pool if _partition(x.id, partitions) == 0)
    b = next(x for x in pool if _partition(x.id, partitions) == partitions - 1)
    fill(cluster, [a, b])
    older = [ModerationDecision(decision_id=f"older-{i:06d}", listing_id=listing,
                                decision="reject", text_hash="x", reviewer="carol",
                                reason="an older decision " * 50)  # megabytes before A's
             for i, listing in enumerate(x for x in (f"l-old-{n}" for n in range(20_000))
                                         if _partition(x, partitions) == 0)][:3000]
    in_thread(lambda: asyncio.run(publish(cluster.settings.kafka, cluster.settings.topics,
                                          MODERATION_DECISIONS, older)))
    _, url = start_review(cluster, undo_s=4)
    wait_for(lambda: depth(url) == 2, 60, 0.5, "the detections never reached the queue")
    page = sign_in(browser, url)
    assert current(page) == a.id
    press(page, "r")
    assert current(page) == b.id
    press(page, "u")
    assert "Last: unsure on" in page.inner_text("form.undo")
    cluster.stop_worker("review")  # restart the service: its state comes from the topics
    _, url = start_review(cluster, name="review-2", undo_s=4)
    page = sign_in(browser, url)
    offered = page.inner_text("form.undo")
    assert "unsure" in offered and b.id in offered, offered
    press(page, "z")
    withdrawn = [d for d in decisions(cluster) if d.decision == "undo"]
    assert [d.listing_id for d in withdrawn] == [b.id]
    assert current(page) == b.id  # back with the reviewer who undid it


def test_undo_goes_away_when_the_confirm_becomes_a_seed(desk, browser):
    cluster, url = desk
    page = sign_in(browser, url)
    confirmed = current(page)
    press(page, "c")
    countdown = page.inner_text("form.undo .countdown")
    assert "then it is a seed" in countdown and int(page.inner_text(".seconds")) <= 4
    page.wait_for_selector("form.undo", state="detached", timeout=10_000)  # no reload needed
    wait_for(lambda: confirmed in {t.id for t in in_thread(
        read_records, cluster, cluster.settings.topics.toxic_items, ToxicItem)}, 60, 0.5,
        "the confirm never became a seed")
    page.reload()
    assert page.locator("form.undo").count() == 0
    page.keyboard.press("z")  # nothing to undo: no request, no error page
    page.wait_for_timeout(500)
    assert page.url == f"{url}/" and "409" not in page.content()
    assert not [d for d in decisions(cluster) if d.decision == "undo"]


def test_up_next_lists_items_in_the_order_they_come(desk, browser):
    _, url = desk
    page = sign_in(browser, url)
    first = current(page)
    assert first == FOUND[0].id
    shots = os.environ.get("QEXPLORER_SCREENSHOT_DIR")
    if shots:  # the docs' picture of the queue: emoji and Chinese as a moderator reads them
        Path(shots).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(shots) / "review-queue.png"), full_page=True)
    press(page, "s")  # skipped: it comes last now
    assert current(page) == FOUND[1].id
    upcoming = page.locator("section.next li").all_inner_texts()
    assert [text.split(" (")[0] for text in upcoming] == [FOUND[2].title, FOUND[3].title,
                                                          FOUND[0].title]
    for listing in (FOUND[2], FOUND[3], FOUND[0]):  # and that is the order they come in
        press(page, "r")
        assert current(page) == listing.id


def test_a_blank_category_stays_blank_on_the_seed(desk, browser):
    cluster, url = desk
    page = sign_in(browser, url)
    confirmed = current(page)
    page.fill("input[name=reason]", "contact id of the seed")
    with page.expect_navigation():
        page.click("button[value=confirm]")
    toxic = wait_for(lambda: next((t for t in in_thread(
        read_records, cluster, cluster.settings.topics.toxic_items, ToxicItem)
        if t.id == confirmed), None), 60, 0.5, "the confirm never became a seed")
    assert toxic.category == ""  # nobody said "drugs" of this listing: the seed's is no label
    [decision] = [d for d in decisions(cluster) if d.listing_id == confirmed]
    assert decision.category is None and decision.reason == "contact id of the seed"


def test_signing_out_ends_the_session_for_every_copy_of_its_cookie(desk, browser):
    _, url = desk
    page = sign_in(browser, url)
    cookies = page.context.cookies()
    with page.expect_navigation():
        page.click("header form button[type=submit]")
    assert page.url == f"{url}/login"
    replay = browser.new_context()
    replay.add_cookies(cookies)
    stolen = replay.new_page()
    stolen.goto(f"{url}/")
    assert stolen.url == f"{url}/login"  # the saved cookie opens nothing
    assert stolen.locator("article.item").count() == 0


def test_a_stranger_guessing_a_name_does_not_lock_its_reviewer_out(desk, browser):
    _, url = desk
    stranger = httpx.Client(base_url=url, timeout=10,
                            transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    refused = []
    for _ in range(12):
        login = stranger.get("/login")
        token = login.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        refused.append(stranger.post("/login", data={"csrf": token, "name": "alice",
                                                     "password": "guess"}).status_code)
    assert set(refused) <= {401, 429} and refused.count(429) >= 6  # the stranger waits
    started = time.monotonic()
    page = sign_in(browser, url)  # from 127.0.0.1, the right password, at once
    assert current(page) == FOUND[0].id and time.monotonic() - started < 30
