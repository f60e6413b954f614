"""A labeler in headless Chromium: log in, start, answer with the keyboard, see the next item."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest
from playwright.sync_api import Dialog, Page, expect
from sqlalchemy import select

from feedback.db.engine import Database
from feedback.db.models import Project, Vote
from feedback.services import ingest, users
from tests.conftest import PASSWORD, People

LABEL_PAGE = "/projects/demo/label"
ITEM_TEXTS = ["first: is it good?", "second: hard to say", "third: maybe bad", "fourth: unclear"]
KEYS = {"1": "neg", "2": "pos"}  # label_keys() for the labels neg/pos


def queue_items(db: Database, slug: str, texts: Sequence[str]) -> list[int]:
    """Queue one uncertain prediction per text, most uncertain first; return the item ids."""
    with db.read() as session:
        project_id = session.scalar(select(Project.id).where(Project.slug == slug))
    caller = users.Principal(user_id=None, role="service", project_id=project_id)
    predictions = [
        {
            "external_id": f"item-{i}",
            "input": {"text": text},
            "probabilities": {"neg": round(0.5 - 0.05 * i, 6), "pos": round(0.5 + 0.05 * i, 6)},
            "model_version": "ext-1",
        }
        for i, text in enumerate(texts)
    ]
    results = ingest.submit_predictions(db, caller, slug, predictions)
    assert [r.status for r in results] == ["queued"] * len(texts)
    return [r.id for r in results]


def watch(page: Page) -> tuple[list[str], list[str]]:
    """Record dialogs (dismissing them) and uncaught script errors on the page."""
    dialogs: list[str] = []
    errors: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return dialogs, errors


def log_in(page: Page, email: str = "labeler@test.io") -> None:
    """Fill in and submit the login form the browser was sent to."""
    expect(page).to_have_url(re.compile(r"/login\b"))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    with page.expect_navigation():
        page.get_by_role("button", name="Log in").click()


def start_labeling(page: Page) -> None:
    """Open the labeling page (logging in on the way) and press Enter to take the first item."""
    page.goto(LABEL_PAGE)
    log_in(page)
    expect(page).to_have_url(re.compile(re.escape(LABEL_PAGE) + "$"))
    expect(page.get_by_role("button", name="Start labeling")).to_be_visible()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    expect(page.locator("#item")).to_be_visible()


@pytest.mark.browser
def test_labeler_answers_three_items_with_the_keyboard_only(
    page: Page, db: Database, project: str, people: People
) -> None:
    item_ids = queue_items(db, project, ITEM_TEXTS)
    dialogs, errors = watch(page)
    start_labeling(page)
    pressed = ["1", "2", "1"]
    for position, key in enumerate(pressed):
        item = page.locator("#item")
        expect(item.locator(".item-text")).to_have_text(ITEM_TEXTS[position])
        expect(item).to_have_attribute("data-item-id", str(item_ids[position]))
        with page.expect_navigation():
            page.keyboard.press(key)
    # The fourth item follows the third answer: the labeler never has to reach for the mouse.
    expect(page.locator("#item .item-text")).to_have_text(ITEM_TEXTS[3])
    with db.read() as session:
        votes = session.scalars(select(Vote).where(Vote.user_id == people.labeler.user_id)).all()
        answers = sorted((vote.item_id, vote.answer) for vote in votes)
    assert answers == sorted(zip(item_ids[:3], [KEYS[key] for key in pressed], strict=True))
    assert (dialogs, errors) == ([], [])


@pytest.mark.browser
def test_item_text_that_looks_like_html_is_shown_as_text(
    page: Page, db: Database, project: str
) -> None:
    payload = "<img src=x onerror=alert(1)>"
    queue_items(db, project, [payload])
    dialogs, errors = watch(page)
    start_labeling(page)
    expect(page.locator("#item .item-text")).to_have_text(payload)
    expect(page.locator('img[src="x"]')).to_have_count(0)
    assert (dialogs, errors) == ([], [])
