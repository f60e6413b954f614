"""The queue in headless Chromium: keyboard labeling, skip, unsure → reviewer, reloads and
network drops, two labelers side by side, an admin's force release, and escaping."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect
from sqlalchemy import func, select, update

from feedback.db.engine import Database
from feedback.db.models import Decision, Item, Project, Vote
from feedback.services import ingest, projects, users
from tests.conftest import PASSWORD, People

pytestmark = pytest.mark.browser
LABEL_PAGE = "/projects/demo/label"
TIMEOUT_MS = 10_000


def queue_texts(db: Database, texts: Sequence[str]) -> list[int]:
    """Queue one uncertain item per text, most uncertain first; return the ids."""
    caller = users.Principal(user_id=None, role="admin")
    rows = [
        {
            "external_id": f"b{i}",
            "input": {"text": t},
            "probabilities": {"neg": 0.5 - i / 1000, "pos": 0.5 + i / 1000},
        }
        for i, t in enumerate(texts)
    ]
    return [r.id for r in ingest.submit_predictions(db, caller, "demo", rows)]


@pytest.fixture
def contexts(browser: Browser, live_server: str) -> Iterator[list[BrowserContext]]:
    """Fresh browser contexts (one per person) for a test; closed afterwards."""
    made: list[BrowserContext] = []
    yield made
    for context in made:
        context.close()


def open_as(
    browser: Browser,
    live_server: str,
    contexts: list[BrowserContext],
    email: str,
    path: str = LABEL_PAGE,
) -> Page:
    """A new context logged in as `email` showing `path`; dialogs and script errors fail."""
    context = browser.new_context(base_url=live_server)
    context.set_default_timeout(TIMEOUT_MS)
    contexts.append(context)
    tab = context.new_page()
    tab.on("dialog", lambda dialog: pytest.fail(f"unexpected dialog: {dialog.message}"))
    tab.on("pageerror", lambda error: pytest.fail(f"script error: {error}"))
    tab.goto(path)
    tab.get_by_label("Email").fill(email)
    tab.get_by_label("Password").fill(PASSWORD)
    with tab.expect_navigation():
        tab.get_by_role("button", name="Log in").click()
    return tab


def begin(tab: Page) -> str:
    """Press Enter on the start button; return the id of the first item shown."""
    with tab.expect_navigation():
        tab.keyboard.press("Enter")
    expect(tab.locator("#item")).to_be_visible()
    return item_id(tab)


def item_id(tab: Page) -> str:
    return tab.locator("#item").get_attribute("data-item-id") or ""


def press_and_wait(tab: Page, key: str) -> str:
    """Press a key on the shown item and wait for the next one (or the end); return its id."""
    before = item_id(tab)
    tab.keyboard.press(key)
    expect(tab.locator(f'#item[data-item-id="{before}"]')).to_have_count(0)
    return item_id(tab) if tab.locator("#item").count() else ""


def test_ten_items_by_keyboard_without_reloading_the_page(
    browser: Browser,
    live_server: str,
    contexts: list[BrowserContext],
    db: Database,
    project: str,
    people: People,
) -> None:
    ids = queue_texts(db, [f"item number {n}" for n in range(11)])
    tab = open_as(browser, live_server, contexts, "labeler@test.io")
    assert begin(tab) == str(ids[0])
    tab.evaluate("window.stillTheSamePage = true")
    keys = ["1", "2"] * 5
    for position, key in enumerate(keys):
        expect(tab.locator("#item .item-text")).to_have_text(f"item number {position}")
        press_and_wait(tab, key)
    expect(tab.locator("#item .item-text")).to_have_text("item number 10")
    expect(tab.locator("#progress")).to_contain_text("10 labeled today")
    assert tab.evaluate("window.stillTheSamePage") is True  # answers were fetched, not page loads
    with db.read() as session:
        answers = dict(session.execute(select(Vote.item_id, Vote.answer)).all())
    assert answers == {ids[n]: ("neg" if key == "1" else "pos") for n, key in enumerate(keys)}


def test_skip_hands_the_item_to_someone_else(
    browser: Browser,
    live_server: str,
    contexts: list[BrowserContext],
    db: Database,
    project: str,
    people: People,
) -> None:
    first, second = queue_texts(db, ["skip me", "take me"])
    tab = open_as(browser, live_server, contexts, "labeler@test.io")
    assert begin(tab) == str(first)
    assert press_and_wait(tab, "s") == str(second)
    admin = open_as(browser, live_server, contexts, "admin@test.io")
    assert begin(admin) == str(first)


def test_unsure_goes_to_a_reviewer_who_decides(
    browser: Browser,
    live_server: str,
    contexts: list[BrowserContext],
    db: Database,
    project: str,
    people: People,
) -> None:
    [only] = queue_texts(db, ["is this good or bad?"])
    users.create_user(db, "reviewer@test.io", PASSWORD, "reviewer")
    projects.add_member(db, "demo", "reviewer@test.io")
    tab = open_as(browser, live_server, contexts, "labeler@test.io")
    begin(tab)
    tab.keyboard.press("?")
    expect(tab.locator("#help")).to_be_visible()
    tab.keyboard.press("Escape")
    press_and_wait(tab, "u")
    expect(tab.locator("#labeling")).to_contain_text("The queue is empty for you right now.")
    boss = open_as(browser, live_server, contexts, "reviewer@test.io", "/projects/demo/escalations")
    expect(boss.locator(f"#escalated-{only}")).to_contain_text("is this good or bad?")
    expect(boss.locator(f"#escalated-{only} .votes")).to_contain_text("labeler@test.io: unsure")
    boss.locator(f"#escalated-{only}").get_by_role("button", name="Decide pos").focus()
    with boss.expect_navigation():
        boss.keyboard.press("Enter")  # keyboard only
    expect(boss.get_by_text("Nothing is escalated.")).to_be_visible()
    with db.read() as session:
        decision = session.scalars(select(Decision).where(Decision.item_id == only)).one()
    assert (decision.label, decision.source) == ("pos", "review")


def test_reload_and_network_drops_never_lose_an_answer(
    browser: Browser,
    live_server: str,
    contexts: list[BrowserContext],
    db: Database,
    project: str,
    people: People,
) -> None:
    first, second, third = queue_texts(db, ["one", "two", "three"])
    tab = open_as(browser, live_server, contexts, "labeler@test.io")
    assert begin(tab) == str(first)
    fence = tab.locator("#item").get_attribute("data-fence")
    tab.reload()
    expect(tab.locator("#item")).to_have_attribute("data-item-id", str(first))
    expect(tab.locator("#item")).to_have_attribute("data-fence", fence or "")
    dropped: list[str] = []

    def drop_once(route: Route) -> None:
        if not dropped:
            dropped.append(route.request.url)
            route.abort("connectionreset")
        else:
            route.continue_()

    tab.route("**/items/*/vote", drop_once)
    assert press_and_wait(tab, "2") == str(second)  # retried after the drop, same fence
    assert len(dropped) == 1
    tab.unroute("**/items/*/vote")
    tab.route("**/items/*/vote", lambda route: route.abort("internetdisconnected"))
    tab.keyboard.press("1")
    expect(tab.locator("#saving")).to_contain_text("retrying")
    tab.unroute("**/items/*/vote")
    tab.reload()  # the unsent answer waits in localStorage and goes out after the reload
    expect(tab.locator("#item")).to_have_attribute("data-item-id", str(third))
    with db.read() as session:
        answers = dict(session.execute(select(Vote.item_id, Vote.answer)).all())
    assert answers == {first: "pos", second: "neg"}


def test_two_labelers_never_see_the_same_item(
    browser: Browser,
    live_server: str,
    contexts: list[BrowserContext],
    db: Database,
    project: str,
    people: People,
) -> None:
    ids = queue_texts(db, [f"shared {n}" for n in range(8)])
    projects.add_member(db, "demo", "other@test.io")
    left = open_as(browser, live_server, contexts, "labeler@test.io")
    right = open_as(browser, live_server, contexts, "other@test.io")
    seen = {"left": [begin(left)], "right": [begin(right)]}
    assert seen["left"] != seen["right"]
    while left.locator("#item").count() or right.locator("#item").count():
        for name, tab in (("left", left), ("right", right)):
            if tab.locator("#item").count():
                following = press_and_wait(tab, "1")
                if following:
                    seen[name].append(following)
                    other = right if name == "left" else left
                    if other.locator("#item").count():
                        assert following != item_id(other)
    assert not set(seen["left"]) & set(seen["right"])
    assert sorted(map(int, seen["left"] + seen["right"])) == sorted(ids)
    with db.read() as session:
        assert session.scalar(select(func.count(Vote.id))) == 8
        assert (
            session.scalar(select(func.count(Decision.id)).where(Decision.source == "consensus"))
            == 8
        )


def test_admin_force_release_takes_the_item_back(
    browser: Browser,
    live_server: str,
    contexts: list[BrowserContext],
    db: Database,
    project: str,
    people: People,
) -> None:
    first, _second = queue_texts(db, ["held", "next"])
    tab = open_as(browser, live_server, contexts, "labeler@test.io")
    assert begin(tab) == str(first)
    admin = open_as(browser, live_server, contexts, "admin@test.io", "/admin/projects/demo/leases")
    row = admin.locator("table.leases tbody tr").first
    expect(row).to_contain_text("labeler@test.io")
    with admin.expect_navigation():
        row.get_by_role("button", name="Force release").click()
    expect(admin.get_by_text("No leases in flight.")).to_be_visible()
    tab.keyboard.press("2")
    expect(tab.locator("#notice")).to_contain_text("expired or been taken over")
    with db.read() as session:
        assert session.scalar(select(func.count(Vote.id))) == 0
        assert session.scalar(select(Item.status).where(Item.id == first)) == "queued"


def test_html_in_an_item_is_shown_as_text(
    browser: Browser,
    live_server: str,
    contexts: list[BrowserContext],
    db: Database,
    project: str,
    people: People,
) -> None:
    payload = "<img src=x onerror=alert(1)>"
    queue_texts(db, ["plain first", payload])
    with db.transaction() as session:
        session.execute(update(Project).values(show_prediction=True))
    tab = open_as(browser, live_server, contexts, "labeler@test.io")
    begin(tab)
    press_and_wait(tab, "1")  # the payload arrives through the fetch-and-swap path
    expect(tab.locator("#item .item-text")).to_have_text(payload)
    expect(tab.locator('img[src="x"]')).to_have_count(0)
    expect(tab.locator("#item .prediction")).to_contain_text("Model's guess")
    assert re.search(r"onerror", tab.locator("#item").inner_html()) is not None  # as text, escaped


def test_a_phone_labels_by_touch(
    browser: Browser,
    live_server: str,
    contexts: list[BrowserContext],
    db: Database,
    project: str,
    people: People,
) -> None:
    first, second = queue_texts(db, ["tap one", "tap two"])
    context = browser.new_context(
        base_url=live_server, viewport={"width": 375, "height": 700}, has_touch=True, is_mobile=True
    )
    context.set_default_timeout(TIMEOUT_MS)
    contexts.append(context)
    tab = context.new_page()
    tab.goto(LABEL_PAGE)
    tab.get_by_label("Email").fill("labeler@test.io")
    tab.get_by_label("Password").fill(PASSWORD)
    with tab.expect_navigation():
        tab.get_by_role("button", name="Log in").tap()
    with tab.expect_navigation():
        tab.get_by_role("button", name="Start labeling").tap()
    expect(tab.locator("#item")).to_have_attribute("data-item-id", str(first))
    button = tab.get_by_role("button", name="pos")
    box = button.bounding_box()
    assert box is not None
    assert box["height"] >= 40  # a thumb-sized target
    assert box["x"] + box["width"] <= 375  # nothing runs off the screen
    button.tap()
    expect(tab.locator("#item")).to_have_attribute("data-item-id", str(second))
    with db.read() as session:
        assert session.execute(select(Vote.item_id, Vote.answer)).all() == [(first, "pos")]
