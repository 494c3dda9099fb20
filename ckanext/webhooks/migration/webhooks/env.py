"""Alembic environment of the webhooks plugin.

Versions are recorded in their own table, ``webhooks_alembic_version``, so the
plugin migrates independently of CKAN core.
"""
from alembic import context
from sqlalchemy import engine_from_config, pool

from ckan.model.meta import metadata

# No logging.config.fileConfig here (CKAN core's env.py has none either):
# the migration often runs inside a CKAN process (`ckan db upgrade`,
# migrate_db_for), whose logging it must leave as it was.
config = context.config

VERSION_TABLE = "webhooks_alembic_version"


def _only_webhooks_tables(obj, name, type_, reflected, compare_to):
    return type_ != "table" or name.startswith("webhooks_")


def run_migrations_offline():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        version_table=VERSION_TABLE,
        include_object=_only_webhooks_tables,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    engine = engine_from_config(
        config.get_section(config.config_ini_section),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table=VERSION_TABLE,
            include_object=_only_webhooks_tables,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
    # this process may record events again (or must stop): look again
    from ckanext.webhooks import tables
    tables.forget()
