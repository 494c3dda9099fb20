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


def test_head_revision_is_the_one_the_code_checks_for():
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    import os
    from ckanext.webhooks import tables
    here = os.path.join(os.path.dirname(tables.__file__), "migration",
                        "webhooks")
    config = Config(os.path.join(here, "alembic.ini"))
    config.set_main_option("script_location", here)
    assert ScriptDirectory.from_config(config).get_current_head() == \
        tables.REVISION


@pytest.mark.usefixtures("clean_db", "with_plugins")
def test_migration_leaves_logging_as_it_was(migrate_db_for):
    import logging
    loggers = {name: logger.disabled
               for name, logger in logging.root.manager.loggerDict.items()
               if isinstance(logger, logging.Logger)}
    handlers = list(logging.root.handlers)
    level = logging.root.level
    migrate_db_for("webhooks", "base", False)
    migrate_db_for("webhooks")
    assert logging.root.handlers == handlers
    assert logging.root.level == level
    now_disabled = {name for name, logger in
                    logging.root.manager.loggerDict.items()
                    if isinstance(logger, logging.Logger) and logger.disabled
                    and not loggers.get(name, False)}
    assert now_disabled == set()
    assert not logging.getLogger("ckan").disabled


@pytest.mark.usefixtures("clean_db", "with_plugins")
def test_without_tables_writes_succeed_and_the_log_says_what_to_run(
        migrate_db_for, caplog):
    from ckan.tests import factories, helpers
    from ckanext.webhooks import tables
    migrate_db_for("webhooks", "base", False)
    try:
        assert _webhooks_tables() & TABLES == set()
        with caplog.at_level("ERROR", logger="ckanext.webhooks"):
            dataset = factories.Dataset()
            helpers.call_action("package_patch", id=dataset["id"],
                                notes="still saved")
            factories.Resource(package_id=dataset["id"])
            factories.Organization()
            factories.Group()
        assert helpers.call_action("package_show", id=dataset["id"])[
            "notes"] == "still saved"
        assert tables.UPGRADE_COMMAND in caplog.text
    finally:
        migrate_db_for("webhooks")
    # with the tables back, events are recorded again at once
    factories.Dataset()
    count = model.Session.execute(sa.text(
        "SELECT count(*) FROM webhooks_event")).scalar()
    model.Session.remove()
    assert count == 1


@pytest.mark.usefixtures("clean_db", "with_plugins")
def test_an_outdated_schema_records_nothing_and_breaks_nothing(
        migrate_db_for, caplog):
    from ckan.tests import factories
    from ckanext.webhooks import tables
    migrate_db_for("webhooks", "3e8f5b1c6a72", False)
    try:
        with caplog.at_level("ERROR", logger="ckanext.webhooks"):
            factories.Dataset()
        assert "outdated (3e8f5b1c6a72)" in caplog.text
        assert tables.UPGRADE_COMMAND in caplog.text
    finally:
        migrate_db_for("webhooks")
