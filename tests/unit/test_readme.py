"""The README: the generated settings table, and a manual that stands on its own.

It links and names no file outside the repository, every relative link resolves, and
the publishing snippet publishes with `mandatory=True`, handles returns and says what
makes a request unique.
"""

import re
from pathlib import Path

import pytest

from service.settings import settings_table

REPO = Path(__file__).parents[2]
README = REPO / "README.md"
MANUALS = [README, REPO / "docs" / "decisions.md", REPO / "benchmarks" / "README.md"]


def test_the_readme_configuration_table_is_generated_from_the_settings():
    assert settings_table().strip() in README.read_text(encoding="utf-8")


@pytest.mark.parametrize("page", MANUALS, ids=lambda page: page.name)
def test_a_manual_names_no_file_outside_the_repository(page: Path):
    text = page.read_text(encoding="utf-8")

    assert "../" not in text
    assert "shared/" not in text
    assert not re.search(r"\bSPEC(\.md)?\b", text)
    assert "DESIGN.md" not in text
    assert "CONVENTIONS.md" not in text


@pytest.mark.parametrize("page", MANUALS, ids=lambda page: page.name)
def test_every_relative_link_of_a_manual_resolves_in_the_repository(page: Path):
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8"))
    relative = [link for link in links if "://" not in link]

    for link in relative:
        target = (page.parent / link).resolve()
        assert target.is_relative_to(REPO), link
        assert target.exists(), link


def test_the_readme_explains_our_decisions_in_the_repository():
    text = README.read_text(encoding="utf-8")

    assert "[docs/decisions.md](docs/decisions.md)" in text
    decisions = (REPO / "docs" / "decisions.md").read_text(encoding="utf-8")
    for topic in ("skip cascade", "idempotency key", "leases", "ForEach", "Retention"):
        assert topic in decisions


def publishing_snippet() -> str:
    text = README.read_text(encoding="utf-8")
    after = text.split("Publishing a trigger from Python", 1)[1]
    found = re.search(r"```python\n(.*?)```", after, flags=re.S)
    assert found is not None
    return found.group(1)


def test_the_publishing_snippet_is_mandatory_handles_returns_and_names_the_key():
    code = publishing_snippet()
    text = README.read_text(encoding="utf-8")
    section = text.split("Publishing a trigger from Python", 1)[1].split("## ", 1)[0]
    prose = " ".join(section.split())

    assert "mandatory=True" in code
    assert "on_return_raises=True" in code
    assert "publisher_confirms=True" in code
    assert "except PublishError" in code
    assert '"idempotency_key"' in code
    assert "some clients fill `message_id` in by themselves" in prose
    assert "`idempotency_key`" in prose
