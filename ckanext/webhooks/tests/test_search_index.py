"""The tests run on a real Solr (``make test`` starts one; conftest.py's
``solr`` fixture insists on it): what CKAN writes is searchable, as on a
portal, and the index is emptied whenever the database is."""
from __future__ import annotations

import pytest
from ckan.tests import factories, helpers

pytestmark = pytest.mark.usefixtures("webhooks")


def test_a_dataset_is_found_where_a_visitor_looks(app):
    org = factories.Organization()
    group = factories.Group()
    dataset = factories.Dataset(title="Findable dataset", owner_org=org["id"],
                                groups=[{"id": group["id"]}])

    found = helpers.call_action("package_search", q="Findable")
    assert [d["id"] for d in found["results"]] == [dataset["id"]]
    assert helpers.call_action(
        "organization_show", id=org["id"])["package_count"] == 1
    assert helpers.call_action(
        "group_show", id=group["id"])["package_count"] == 1
    for page in ("/dataset/", "/organization/" + org["name"],
                 "/group/" + group["name"]):
        assert "Findable dataset" in app.get(page).body, page


# the two tests below run in this order: the second sees nothing of the
# first's dataset, which clean_db removed from the database and
# clean_index from Solr
def test_leaves_a_dataset_behind():
    factories.Dataset(name="left-behind")
    assert helpers.call_action("package_search", q="name:left-behind")["count"] == 1


def test_the_index_is_emptied_with_the_database():
    assert helpers.call_action("package_search", q="name:left-behind")["count"] == 0
    assert helpers.call_action("package_search")["count"] == 0
