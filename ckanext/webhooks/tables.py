"""Whether the webhooks tables are there, and at the revision this code needs.

With the plugin enabled but its migrations not run (an operator who has not
yet run ``ckan db upgrade -p webhooks``, or a test suite whose ``clean_db``
re-creates only CKAN's own tables), recording an event would fail inside
CKAN's transaction and take the dataset write down with it. Instead the
extension records nothing, and says so loudly in the log, until the tables
are there.
"""
from __future__ import annotations

import logging
import time
from typing import Optional

import sqlalchemy as sa

log = logging.getLogger(__name__)

# the newest migration in migration/webhooks/versions (a test checks it)
REVISION = "c26d5e0a7b14"
UPGRADE_COMMAND = "ckan db upgrade -p webhooks"
# while the schema is missing, look again this often (a write costs nothing
# more in between)
RECHECK_SECONDS = 10.0

_ready: Optional[bool] = None
_checked_at = 0.0


def state(connection: sa.engine.Connection) -> str:
    """``ready``, ``missing`` or ``outdated (<revision>)``."""
    exists = connection.execute(sa.text(
        "SELECT to_regclass('webhooks_alembic_version') IS NOT NULL "
        "AND to_regclass('webhooks_event') IS NOT NULL")).scalar()
    if not exists:
        return "missing"
    revision = connection.execute(sa.text(
        "SELECT version_num FROM webhooks_alembic_version")).scalar()
    if revision != REVISION:
        return "outdated ({})".format(revision)
    return "ready"


def problem(current: str) -> str:
    return ("webhooks: the extension's tables are {}; no events are recorded "
            "until you run `{}`").format(current, UPGRADE_COMMAND)


def ready(connection: sa.engine.Connection) -> bool:
    """Whether events can be recorded; checked once, and again every
    RECHECK_SECONDS while they cannot (logging an error each time)."""
    global _ready, _checked_at
    if _ready:
        return True
    now = time.monotonic()
    if _ready is None or now - _checked_at >= RECHECK_SECONDS:
        _checked_at = now
        current = state(connection)
        _ready = current == "ready"
        if not _ready:
            log.error(problem(current))
    return bool(_ready)


def forget() -> None:
    """Check again at the next write (after a migration ran in-process)."""
    global _ready
    _ready = None


def check_at_start_up() -> None:
    """Log an error naming the command to run when the schema is not ready."""
    from ckan.model import meta
    if meta.engine is None:
        return
    try:
        with meta.engine.connect() as connection:
            current = state(connection)
    except sa.exc.SQLAlchemyError as e:
        log.warning("webhooks: could not check the tables at start-up (%s)",
                    e)
        return
    if current != "ready":
        log.error(problem(current))
