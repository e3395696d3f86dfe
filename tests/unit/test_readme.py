"""The README's configuration table is the one the settings model generates."""

from pathlib import Path

from service.settings import settings_table

README = Path(__file__).parents[2] / "README.md"


def test_the_readme_configuration_table_is_generated_from_the_settings():
    assert settings_table().strip() in README.read_text(encoding="utf-8")
