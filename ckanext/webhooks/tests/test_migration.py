"""The webhooks tables come and go only through the plugin's migrations."""
import pytest
import sqlalchemy as sa

import ckan.model as model

TABLES = {"webhooks_hook", "webhooks_event", "webhooks_delivery"}


def _trigger_function_exists() -> bool:
    exists = model.Session.execute(sa.text(
        "SELECT count(*) FROM pg_proc WHERE proname = 'webhooks_event_added'"
    )).scalar() > 0
    model.Session.remove()
    return exists


def _webhooks_tables() -> set[str]:
    model.Session.remove()
    names = sa.inspect(model.meta.engine).get_table_names()
    return {name for name in names if name.startswith("webhooks_")}


@pytest.mark.usefixtures("clean_db", "with_plugins")
def test_upgrade_creates_tables_and_downgrade_drops_them(migrate_db_for):
    migrate_db_for("webhooks")
    assert TABLES <= _webhooks_tables()
    assert _trigger_function_exists()
    try:
        migrate_db_for("webhooks", "base", False)
        assert _webhooks_tables() & TABLES == set()
        assert not _trigger_function_exists()
    finally:
        # leave the database as every other test expects it
        migrate_db_for("webhooks")
    assert TABLES <= _webhooks_tables()


@pytest.mark.usefixtures("clean_db", "with_plugins")
def test_upgrade_twice_is_harmless(migrate_db_for):
    migrate_db_for("webhooks")
    migrate_db_for("webhooks")
    assert TABLES <= _webhooks_tables()
