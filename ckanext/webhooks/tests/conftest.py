"""Fixtures: the webhooks tables, a search index emptied with the database,
a real receiver, real workers, a Redis server of the test's own; the
`slow` marker; a real Solr is required (`make test` starts one)."""
from __future__ import annotations

import os

import pytest

import ckan.model as model
import ckan.lib.redis as ckan_redis
from ckan.lib import jobs as ckan_jobs
from ckan.lib import search
import ckan.plugins.toolkit as tk

from ckanext.webhooks.tests import processes
from ckanext.webhooks.tests.receiver import Receiver


@pytest.fixture(scope="session", autouse=True)
def solr():
    """Stop at once, saying how to get one, when there is no Solr: every
    dataset write indexes into it."""
    if not search.is_available():
        pytest.exit("no Solr answers at {} (solr_url, or CKAN_SOLR_URL): run "
                    "the tests with `make test`, which starts one, or under "
                    "`scripts/solr.sh run pytest ...`".format(
                        search.SolrSettings.get()[0]), returncode=3)


@pytest.fixture(autouse=True)
def clean_index_with_db(request):
    """The search index is emptied whenever the database is, as CKAN's own
    tests pair ``clean_db`` with ``clean_index`` (only this site's
    documents: ``ckan.site_id``)."""
    if "clean_db" in request.fixturenames:
        request.getfixturevalue("clean_index")


@pytest.fixture(autouse=True)
def typed_config(ckan_config):
    """Values set with the ``ckan_config`` mark get their declared types.

    CKAN 2.11+ normalizes the config whenever ``with_plugins`` (re)loads the
    plugins. CKAN 2.10's ``with_plugins`` skips plugins that are already
    loaded, so ``ckan_config("ckanext.webhooks.allow_private_addresses",
    "false")`` would stay the string "false" (true) there.
    """
    from ckan.common import config_declaration
    config_declaration.normalize(ckan_config)
    yield


@pytest.fixture
def webhooks_db(clean_db, migrate_db_for, with_plugins):
    migrate_db_for("webhooks")
    yield


@pytest.fixture
def webhooks(webhooks_db):
    """Everything a webhooks test needs: tables and plugin."""
    yield


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def run_jobs():
    """Run the real worker in burst mode: deliver what is due, then
    return."""
    from ckanext.webhooks.worker import run_worker

    def run():
        run_worker(burst=True)
        model.Session.remove()
    return run


@pytest.fixture
def workers(request, tmp_path):
    """Start real `ckan webhooks worker` processes with extra options."""
    test_ini = os.path.abspath(request.config.getoption("ckan_ini"))
    started = []

    def start(**options):
        n = len(started)
        ini = processes.write_ini(
            test_ini, tmp_path / "worker{}.ini".format(n), **options)
        process = processes.start(
            [processes.CKAN, "-c", str(ini), "webhooks", "worker"],
            tmp_path / "worker{}.log".format(n))
        started.append(process)
        return process

    yield start
    for process in started:
        processes.stop(process)


@pytest.fixture
def own_redis(tmp_path):
    """A Redis server of the test's own, which it may stop and start; this
    process (and workers started with ``worker_options(own_redis.url)``)
    use it."""
    server = processes.OwnRedis(tmp_path)
    server.start()
    saved = tk.config.get("ckan.redis.url")
    tk.config["ckan.redis.url"] = server.url
    _forget_redis_connections()
    yield server
    server.stop()
    tk.config["ckan.redis.url"] = saved
    _forget_redis_connections()


@pytest.fixture
def own_postgres():
    """A PostgreSQL cluster of the test's own, which it may stop, start and
    restart (skipped where there are no server binaries)."""
    try:
        server = processes.OwnPostgres()
    except RuntimeError as e:
        pytest.skip(str(e))
    try:
        server.create()
        yield server
        server.stop()
    finally:
        server.remove()


def _forget_redis_connections():
    ckan_redis._connection_pool = None
    ckan_jobs._queues.clear()  # CKAN caches queues with their connection


@pytest.fixture
def forget_creation_rates():
    """Forget the anonymous creation counts kept in Redis by earlier tests."""
    from ckan.lib.redis import connect_to_redis
    conn = connect_to_redis()
    pattern = "ckanext-webhooks:{}:creations:*".format(
        tk.config.get("ckan.site_id"))

    def forget():
        for key in conn.scan_iter(pattern):
            conn.delete(key)
    forget()
    yield
    forget()


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "ckan_config(key, value): override a CKAN config option")
    config.addinivalue_line(
        "markers", "slow: starts processes (workers, CKAN servers, its own "
        "Redis or PostgreSQL, a browser); `make test-fast` leaves it out")
    config.addinivalue_line(
        "markers", "demo_solr(value): DEMO_SOLR for test_demo's `make demo`")


# fixtures that start processes: a test using one is slow
_STARTS_PROCESSES = {"workers", "own_redis", "own_postgres"}


def pytest_collection_modifyitems(config, items):
    """A test that starts processes must say so, or `make test-fast`
    would not be fast."""
    unmarked = [item.nodeid for item in items
                if _STARTS_PROCESSES & set(item.fixturenames)
                and item.get_closest_marker("slow") is None]
    if unmarked:
        raise pytest.UsageError(
            "mark these tests @pytest.mark.slow: " + ", ".join(unmarked))
