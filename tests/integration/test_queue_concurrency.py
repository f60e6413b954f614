"""Eight labelers claim and vote at once through the API until the queue is empty.

Each labeler is its own user with a personal token and its own Flask test client in its own
thread, on SQLite and on PostgreSQL. Afterwards: no item was held by two labelers, every
accepted vote is stored, and every item is decided exactly once.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

import pytest
from flask import Flask
from sqlalchemy import func, select, update

from feedback.db.engine import Database
from feedback.db.models import Decision, Item, Project, Vote
from feedback.services import ingest, projects, users
from feedback.services.users import Principal
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.services, pytest.mark.usefixtures("backend")]
LABELERS = 8


@dataclass
class Tally:
    claims: list[tuple[int, int]] = field(default_factory=list)  # (item id, fence)
    accepted: list[int] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def fill_queue(db: Database, slug: str, count: int) -> None:
    with db.read() as session:
        project_id = session.scalar(select(Project.id).where(Project.slug == slug))
    caller = Principal(user_id=None, role="service", project_id=project_id)
    for start in range(0, count, 1000):
        batch = [
            {
                "external_id": f"c{n}",
                "input": {"text": f"item {n}"},
                "probabilities": {"neg": 0.5 - (n % 97) / 1000, "pos": 0.5 + (n % 97) / 1000},
            }
            for n in range(start, min(start + 1000, count))
        ]
        results = ingest.submit_predictions(db, caller, slug, batch)
        assert {r.status for r in results} == {"queued"}


def labelers(db: Database, slug: str) -> list[str]:
    tokens = []
    for n in range(LABELERS):
        email = f"worker{n}@test.io"
        users.create_user(db, email, PASSWORD, "labeler")
        projects.add_member(db, slug, email)
        tokens.append(users.create_token(db, f"w{n}", None, email))
    return tokens


def work(app: Flask, token: str, slug: str, tally: Tally, limit: int) -> None:
    """Claim and answer until the queue has nothing for this labeler (or the limit is hit)."""
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(limit):
        response = client.post(f"/api/v1/projects/{slug}/queue/claim", headers=headers)
        if response.status_code == 204:
            return
        if response.status_code != 200:
            tally.errors.append(f"claim {response.status_code} {response.get_data(as_text=True)}")
            return
        item = response.get_json()["item"]
        tally.claims.append((item["id"], item["lease"]["fence"]))
        label = "pos" if item["id"] % 2 else "neg"
        vote = client.post(
            f"/api/v1/items/{item['id']}/votes",
            headers=headers,
            json={"label": label, "fence": item["lease"]["fence"], "seconds": 0.1},
        )
        (tally.accepted if vote.status_code == 201 else tally.refused).append(item["id"])


def run_labelers(app: Flask, tokens: list[str], slug: str, limit: int) -> list[Tally]:
    tallies = [Tally() for _ in tokens]
    threads = [
        threading.Thread(target=work, args=(app, token, slug, tally, limit), daemon=True)
        for token, tally in zip(tokens, tallies, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert not any(thread.is_alive() for thread in threads), "a labeler thread hung"
    return tallies


def test_eight_labelers_label_2000_items_without_double_assignment(
    app: Flask, db: Database, project: str
) -> None:
    fill_queue(db, project, 2000)
    tallies = run_labelers(app, labelers(db, project), project, limit=2100)
    assert [t.errors for t in tallies] == [[]] * LABELERS
    claimed = Counter(item for t in tallies for item, _ in t.claims)
    assert len(claimed) == 2000
    assert set(claimed.values()) == {1}
    accepted = [item for t in tallies for item in t.accepted]
    assert sorted(accepted) == sorted(claimed)
    assert [t.refused for t in tallies] == [[]] * LABELERS
    with db.read() as session:
        votes = Counter(session.scalars(select(Vote.item_id)).all())
        decisions = Counter(
            session.scalars(select(Decision.item_id).where(Decision.source == "consensus")).all()
        )
        waiting = session.scalar(select(func.count(Item.id)).where(Item.status != "decided"))
    assert votes == Counter(accepted)  # zero lost votes
    assert set(decisions) == set(claimed)
    assert set(decisions.values()) == {1}
    assert waiting == 0


def test_overlap_three_never_gives_an_item_to_more_than_three(
    app: Flask, db: Database, project: str
) -> None:
    with db.transaction() as session:
        session.execute(update(Project).where(Project.slug == project).values(overlap=3))
    fill_queue(db, project, 150)
    tallies = run_labelers(app, labelers(db, project), project, limit=400)
    assert [t.errors for t in tallies] == [[]] * LABELERS
    for tally in tallies:  # a labeler never gets the same item twice
        assert len({item for item, _ in tally.claims}) == len(tally.claims)
    claimed = Counter(item for t in tallies for item, _ in t.claims)
    assert len(claimed) == 150
    assert set(claimed.values()) == {3}
    with db.read() as session:
        votes = Counter(session.scalars(select(Vote.item_id)).all())
        decisions = Counter(
            session.scalars(select(Decision.item_id).where(Decision.source == "consensus")).all()
        )
    assert votes == claimed
    assert set(decisions.values()) == {1}
    assert len(decisions) == 150
