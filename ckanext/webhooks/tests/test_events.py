"""Which CKAN changes become which deliveries, and which never leave CKAN."""
import pytest

import ckan.model as model
from ckan.tests import factories, helpers

from ckanext.webhooks.model import Message, Event
from ckanext.webhooks.tests.callers import anonymous
from ckanext.webhooks.tests.factories import HookFactory

TOPICS = ("dataset/create", "dataset/update", "dataset/delete",
          "resource/create", "resource/update", "resource/delete",
          "dataset/*", "resource/*")

pytestmark = pytest.mark.usefixtures("webhooks")


@pytest.fixture
def hooks(webhooks, receiver):
    """One anonymous hook per topic, each on its own receiver path."""
    made = {}
    for topic in TOPICS:
        path = "/" + topic.replace("/", "-").replace("*", "all")
        hook = HookFactory(receiver=receiver, path=path, topic=topic)
        made[topic] = {"id": hook["id"], "path": path,
                       "secret": hook["secret"]}
    return made


class Deliveries:
    """What each topic's hook received, after a public marker arrived.

    The marker (a new public dataset) is created last; once it has reached
    the ``dataset/create`` and ``dataset/*`` hooks, everything queued before
    it has been delivered too, so an absence is real and not slowness.
    """

    def __init__(self, receiver, hooks):
        self.receiver, self.hooks = receiver, hooks

    def settle(self, run_jobs) -> dict:
        marker = factories.Dataset()
        run_jobs()
        for topic in ("dataset/create", "dataset/*"):
            path = self.hooks[topic]["path"]
            got = self.receiver.wait_for(1, path)
            assert any(r.json["data"].get("id") == marker["id"]
                       for r in got), "marker never arrived on " + path
        self.marker_id = marker["id"]
        return self.received()

    def received(self) -> dict:
        """(type, entity id) pairs per topic, without the marker."""
        result = {}
        for topic, hook in self.hooks.items():
            pairs = []
            for request in self.receiver.on(hook["path"]):
                payload = request.verify(hook["secret"])
                entity = payload["data"].get("id")
                if entity == getattr(self, "marker_id", None):
                    continue
                pairs.append((payload["type"], entity))
            result[topic] = pairs
        return result

    def payloads(self, topic: str) -> list[dict]:
        """The bodies a topic's hook received, without the marker's (it
        may arrive before them: different datasets go side by side)."""
        hook = self.hooks[topic]
        bodies = [r.verify(hook["secret"])
                  for r in self.receiver.on(hook["path"])]
        return [b for b in bodies
                if b["data"].get("id") != getattr(self, "marker_id", None)]


@pytest.fixture
def deliveries(receiver, hooks):
    return Deliveries(receiver, hooks)


def expect(**by_topic) -> dict:
    """Every topic receives nothing unless said otherwise."""
    wanted = {topic: [] for topic in TOPICS}
    for key, pairs in by_topic.items():
        wanted[key.replace("_all", "/*").replace("_", "/")] = pairs
    return wanted


def test_package_create_fires_dataset_create(deliveries, run_jobs):
    dataset = factories.Dataset()
    got = deliveries.settle(run_jobs)
    event = ("dataset/create", dataset["id"])
    assert got == expect(dataset_create=[event], dataset_all=[event])


def test_package_create_with_resources_fires_only_dataset_create(
        deliveries, run_jobs):
    dataset = factories.Dataset(resources=[{"url": "http://example.com/a"},
                                           {"url": "http://example.com/b"}])
    got = deliveries.settle(run_jobs)
    event = ("dataset/create", dataset["id"])
    assert got == expect(dataset_create=[event], dataset_all=[event])


@pytest.mark.parametrize("action", ["package_update", "package_patch"])
def test_package_update_and_patch_fire_dataset_update(
        deliveries, run_jobs, action):
    dataset = factories.Dataset()
    run_jobs()
    data = dict(dataset, title="A new title") if action == "package_update" \
        else {"id": dataset["id"], "title": "A new title"}
    helpers.call_action(action, **data)
    got = deliveries.settle(run_jobs)
    created = ("dataset/create", dataset["id"])
    updated = ("dataset/update", dataset["id"])
    assert got == expect(dataset_create=[created], dataset_update=[updated],
                         dataset_all=[created, updated])
    [update] = deliveries.payloads("dataset/update")
    assert update["data"]["title"] == "A new title"


def test_package_delete_fires_dataset_delete(deliveries, run_jobs):
    dataset = factories.Dataset()
    run_jobs()
    helpers.call_action("package_delete", id=dataset["id"])
    got = deliveries.settle(run_jobs)
    created = ("dataset/create", dataset["id"])
    deleted = ("dataset/delete", dataset["id"])
    assert got == expect(dataset_create=[created], dataset_delete=[deleted],
                         dataset_all=[created, deleted])
    data = deliveries.payloads("dataset/delete")[0]["data"]
    assert data["id"] == dataset["id"]
    assert data["name"] == dataset["name"]


def test_dataset_purge_of_an_active_dataset_fires_dataset_delete(
        deliveries, run_jobs):
    dataset = factories.Dataset(resources=[{"url": "http://example.com/a"}])
    run_jobs()
    helpers.call_action("dataset_purge", id=dataset["id"])
    got = deliveries.settle(run_jobs)
    created = ("dataset/create", dataset["id"])
    deleted = ("dataset/delete", dataset["id"])
    assert got == expect(dataset_create=[created], dataset_delete=[deleted],
                         dataset_all=[created, deleted])
    data = deliveries.payloads("dataset/delete")[0]["data"]
    assert (data["id"], data["name"]) == (dataset["id"], dataset["name"])


def test_purge_of_an_already_deleted_dataset_fires_no_second_delete(
        deliveries, run_jobs):
    dataset = factories.Dataset()
    helpers.call_action("package_delete", id=dataset["id"])
    run_jobs()
    helpers.call_action("dataset_purge", id=dataset["id"])
    got = deliveries.settle(run_jobs)
    assert got["dataset/delete"] == [("dataset/delete", dataset["id"])]


def test_resource_create_fires_resource_create_and_not_dataset_update(
        deliveries, run_jobs):
    dataset = factories.Dataset()
    run_jobs()
    resource = factories.Resource(package_id=dataset["id"])
    got = deliveries.settle(run_jobs)
    created = ("dataset/create", dataset["id"])
    added = ("resource/create", resource["id"])
    assert got == expect(dataset_create=[created], dataset_all=[created],
                         resource_create=[added], resource_all=[added])
    data = deliveries.payloads("resource/create")[0]["data"]
    assert data["id"] == resource["id"]
    assert data["package_id"] == dataset["id"]
    assert data["url"] == resource["url"]


@pytest.mark.parametrize("action", ["resource_update", "resource_patch"])
def test_resource_update_and_patch_fire_resource_update(
        deliveries, run_jobs, action):
    dataset = factories.Dataset(resources=[{"url": "http://example.com/a",
                                            "name": "before"}])
    resource = dataset["resources"][0]
    run_jobs()
    data = dict(resource, name="after") if action == "resource_update" \
        else {"id": resource["id"], "name": "after"}
    helpers.call_action(action, **data)
    got = deliveries.settle(run_jobs)
    created = ("dataset/create", dataset["id"])
    updated = ("resource/update", resource["id"])
    assert got == expect(dataset_create=[created], dataset_all=[created],
                         resource_update=[updated], resource_all=[updated])
    assert deliveries.payloads("resource/update")[0]["data"]["name"] == \
        "after"


def test_resource_delete_fires_resource_delete_with_id_and_package_id(
        deliveries, run_jobs):
    dataset = factories.Dataset(resources=[{"url": "http://example.com/a"},
                                           {"url": "http://example.com/b"}])
    resource = dataset["resources"][0]
    run_jobs()
    helpers.call_action("resource_delete", id=resource["id"])
    got = deliveries.settle(run_jobs)
    created = ("dataset/create", dataset["id"])
    deleted = ("resource/delete", resource["id"])
    assert got == expect(dataset_create=[created], dataset_all=[created],
                         resource_delete=[deleted], resource_all=[deleted])
    data = deliveries.payloads("resource/delete")[0]["data"]
    assert data["id"] == resource["id"]
    assert data["package_id"] == dataset["id"]


def test_resource_events_carry_the_resource_on_every_topic(
        deliveries, run_jobs):
    dataset = factories.Dataset()
    resource = factories.Resource(package_id=dataset["id"])
    helpers.call_action("resource_patch", id=resource["id"], name="renamed")
    helpers.call_action("resource_delete", id=resource["id"])
    got = deliveries.settle(run_jobs)
    assert got["resource/*"] == [("resource/create", resource["id"]),
                                 ("resource/update", resource["id"]),
                                 ("resource/delete", resource["id"])]
    for payload in deliveries.payloads("resource/*"):
        assert payload["data"]["package_id"] == dataset["id"]


# --- transactions ------------------------------------------------------------

def _event_count() -> int:
    return model.Session.query(Event).count()


def test_rolled_back_change_leaves_no_event_and_no_delivery(
        deliveries, run_jobs):
    model.Session.remove()
    before = _event_count()
    context = {"user": helpers.call_action("get_site_user")["name"],
               "defer_commit": True}
    helpers.call_action("package_create", context=context,
                        name="never-committed")
    model.Session.rollback()
    model.Session.remove()
    assert model.Package.get("never-committed") is None
    assert _event_count() == before
    got = deliveries.settle(run_jobs)
    assert got == expect()
    model.Session.remove()
    # only the marker's event, and only its deliveries
    assert [e.entity_id for e in model.Session.query(Event)] == [
        deliveries.marker_id]
    assert model.Session.query(Message).join(
        Event, Event.id == Message.event_id).filter(
        Event.entity_id != deliveries.marker_id).count() == 0


def test_committed_change_leaves_an_event_row_before_any_worker_runs():
    dataset = factories.Dataset()
    model.Session.remove()
    events = model.Session.query(Event).filter(
        Event.entity_id == dataset["id"]).all()
    assert [e.topic for e in events] == ["dataset/create"]


def test_dataset_created_and_deleted_before_the_worker_runs_yields_both(
        deliveries, run_jobs):
    dataset = factories.Dataset()
    helpers.call_action("package_delete", id=dataset["id"])
    got = deliveries.settle(run_jobs)
    created = ("dataset/create", dataset["id"])
    deleted = ("dataset/delete", dataset["id"])
    assert got["dataset/*"] == [created, deleted]
    assert got["dataset/create"] == [created]
    assert got["dataset/delete"] == [deleted]
    data = deliveries.payloads("dataset/create")[0]["data"]
    assert data["id"] == dataset["id"]
    assert data["name"] == dataset["name"]


def test_dataset_created_and_purged_before_the_worker_runs_yields_both(
        deliveries, run_jobs):
    dataset = factories.Dataset()
    helpers.call_action("dataset_purge", id=dataset["id"])
    got = deliveries.settle(run_jobs)
    assert got["dataset/*"] == [("dataset/create", dataset["id"]),
                                ("dataset/delete", dataset["id"])]
    mine = [p for p in deliveries.payloads("dataset/*")
            if p["data"]["id"] == dataset["id"]]
    assert len(mine) == 2
    for payload in mine:
        assert payload["data"]["name"] == dataset["name"]


# --- no leaks ----------------------------------------------------------------

def test_private_and_draft_datasets_never_reach_an_anonymous_hook(
        deliveries, run_jobs):
    org = factories.Organization()
    private = factories.Dataset(owner_org=org["id"], private=True,
                                resources=[{"url": "http://example.com/p"}])
    helpers.call_action("package_patch", id=private["id"], title="Changed")
    resource = factories.Resource(package_id=private["id"])
    helpers.call_action("resource_patch", id=resource["id"], name="secret")
    helpers.call_action("resource_delete", id=resource["id"])
    helpers.call_action("package_delete", id=private["id"])
    assert private["private"] is True
    draft = factories.Dataset(state="draft")
    assert draft["state"] == "draft"
    helpers.call_action("package_patch", id=draft["id"], title="Still draft")
    helpers.call_action("package_delete", id=draft["id"])
    got = deliveries.settle(run_jobs)
    assert got == expect()
    assert model.Session.query(Event).count() > 0, \
        "the changes were recorded; they were just not delivered"


def test_dataset_made_private_is_not_delivered_to_an_anonymous_hook(
        deliveries, run_jobs):
    org = factories.Organization()
    dataset = factories.Dataset(owner_org=org["id"], private=False)
    run_jobs()
    helpers.call_action("package_patch", id=dataset["id"], private=True)
    helpers.call_action("package_patch", id=dataset["id"], title="Hidden")
    got = deliveries.settle(run_jobs)
    assert got["dataset/update"] == []
    assert got["dataset/*"] == [("dataset/create", dataset["id"])]


def test_private_dataset_reaches_its_member_and_not_an_outsider(
        receiver, run_jobs):
    member, outsider = factories.User(), factories.User()
    org = factories.Organization(
        users=[{"name": member["name"], "capacity": "member"}])
    member_secret = HookFactory(receiver=receiver, path="/member",
                                user=member, topic="dataset/*")["secret"]
    outsider_secret = HookFactory(receiver=receiver, path="/outsider",
                                  user=outsider, topic="dataset/*")["secret"]
    private = factories.Dataset(owner_org=org["id"], private=True)
    marker = factories.Dataset()
    run_jobs()
    got = receiver.wait_for(2, "/member")
    assert sorted(r.verify(member_secret)["data"]["id"] for r in got) == \
        sorted([private["id"], marker["id"]])
    got = receiver.wait_for(1, "/outsider")
    assert [r.verify(outsider_secret)["data"]["id"] for r in got] == [
        marker["id"]]


def test_private_dataset_is_not_delivered_to_a_member_removed_before_delivery(
        receiver, run_jobs):
    member = factories.User()
    org = factories.Organization(
        users=[{"name": member["name"], "capacity": "member"}])
    secret = HookFactory(receiver=receiver, path="/member", user=member,
                         topic="dataset/*")["secret"]
    private = factories.Dataset(owner_org=org["id"], private=True)
    site_user = helpers.call_action("get_site_user")["name"]
    helpers.call_action("organization_member_delete",
                        context={"user": site_user}, id=org["id"],
                        username=member["name"])
    marker = factories.Dataset()
    run_jobs()
    got = receiver.wait_for(1, "/member")
    assert [r.verify(secret)["data"]["id"] for r in got] == [marker["id"]]
    assert private["id"] not in [r.json["data"]["id"] for r in got]


@pytest.mark.parametrize("change, seen", [
    pytest.param({"notes": "Changed notes"},
                 lambda data: data["notes"] == "Changed notes", id="notes"),
    pytest.param({"license_id": "cc-by"},
                 lambda data: data["license_id"] == "cc-by", id="license"),
    pytest.param({"tags": [{"name": "fresh-tag"}]},
                 lambda data: [t["name"] for t in data["tags"]] == [
                     "fresh-tag"], id="tags"),
    pytest.param({"extras": [{"key": "colour", "value": "red"}]},
                 lambda data: {"key": "colour", "value": "red"} in
                 data["extras"], id="extras"),
    pytest.param("group",
                 lambda data: len(data["groups"]) == 1, id="groups"),
])
def test_every_kind_of_dataset_edit_fires_dataset_update(
        deliveries, run_jobs, change, seen):
    dataset = factories.Dataset()
    if change == "group":
        change = {"groups": [{"id": factories.Group()["id"]}]}
    run_jobs()
    # a sysadmin: CKAN silently skips groups the editor may not use
    editor = factories.Sysadmin()
    helpers.call_action("package_patch", context={"user": editor["name"]},
                        id=dataset["id"], **change)
    got = deliveries.settle(run_jobs)
    assert got["dataset/update"] == [("dataset/update", dataset["id"])]
    assert seen(deliveries.payloads("dataset/update")[0]["data"])


# --- filters -----------------------------------------------------------------

def _received(receiver, path, secret):
    return [(p["type"], p["data"]["id"]) for p in
            (r.verify(secret) for r in receiver.on(path))]


def _marker_last(receiver, path, secret, count):
    """Wait for ``count`` requests and check the last is the marker."""
    got = receiver.wait_for(count, path)
    assert len(got) == count, _received(receiver, path, secret)
    return _received(receiver, path, secret)


def test_dataset_filter_matches_the_dataset_and_its_resources(
        receiver, run_jobs):
    target, other = factories.Dataset(), factories.Dataset()
    run_jobs()  # their creation is older than the hooks
    datasets = HookFactory(receiver=receiver, path="/d", topic="dataset/*",
                           dataset=target["name"])["secret"]
    resources = HookFactory(receiver=receiver, path="/r", topic="resource/*",
                            dataset=target["id"])["secret"]
    helpers.call_action("package_patch", id=other["id"], title="Other")
    factories.Resource(package_id=other["id"])
    mine = factories.Resource(package_id=target["id"])
    helpers.call_action("package_patch", id=target["id"], title="Marker")
    run_jobs()
    assert _marker_last(receiver, "/d", datasets, 1) == [
        ("dataset/update", target["id"])]
    assert _marker_last(receiver, "/r", resources, 1) == [
        ("resource/create", mine["id"])]


def test_organization_filter_matches_its_datasets_and_their_resources(
        receiver, run_jobs):
    org, other_org = factories.Organization(), factories.Organization()
    datasets = HookFactory(receiver=receiver, path="/d", topic="dataset/*",
                           organization=org["name"])["secret"]
    resources = HookFactory(receiver=receiver, path="/r", topic="resource/*",
                            organization=org["id"])["secret"]
    factories.Dataset(owner_org=other_org["id"],
                      resources=[{"url": "http://example.com/x"}])
    outside = factories.Dataset()
    factories.Resource(package_id=outside["id"])
    inside = factories.Dataset(owner_org=org["id"])
    resource = factories.Resource(package_id=inside["id"])
    helpers.call_action("package_patch", id=inside["id"], title="Marker")
    run_jobs()
    assert _marker_last(receiver, "/d", datasets, 2) == [
        ("dataset/create", inside["id"]), ("dataset/update", inside["id"])]
    assert _marker_last(receiver, "/r", resources, 1) == [
        ("resource/create", resource["id"])]


def test_group_filter_matches_its_datasets(receiver, run_jobs):
    group = factories.Group()
    secret = HookFactory(receiver=receiver, path="/g", topic="dataset/*",
                         group=group["name"])["secret"]
    factories.Dataset()
    member = factories.Dataset(groups=[{"id": group["id"]}])
    helpers.call_action("package_patch", id=member["id"], title="Marker")
    run_jobs()
    assert _marker_last(receiver, "/g", secret, 2) == [
        ("dataset/create", member["id"]), ("dataset/update", member["id"])]


def test_resource_filter_matches_only_that_resource(receiver, run_jobs):
    dataset = factories.Dataset(resources=[{"url": "http://example.com/a"},
                                           {"url": "http://example.com/b"}])
    mine, sibling = dataset["resources"]
    run_jobs()
    secret = HookFactory(receiver=receiver, path="/r", topic="resource/*",
                         resource=mine["id"])["secret"]
    helpers.call_action("resource_patch", id=sibling["id"], name="sibling")
    helpers.call_action("package_patch", id=dataset["id"], title="Changed")
    helpers.call_action("resource_patch", id=mine["id"], name="Marker")
    run_jobs()
    assert _marker_last(receiver, "/r", secret, 1) == [
        ("resource/update", mine["id"])]


# --- changes ------------------------------------------------------------

def _bodies(receiver, path, secret, count):
    """The first ``count`` bodies on ``path``, signatures checked."""
    got = receiver.wait_for(count, path)
    assert len(got) == count, [r.json["type"] for r in got]
    return [r.verify(secret) for r in got]


def test_dataset_update_says_what_changed_and_the_values_before(
        receiver, run_jobs):
    dataset = factories.Dataset(title="Old title", notes="Old notes",
                                version="1.0")
    secret = HookFactory(receiver=receiver, path="/u",
                         topic="dataset/update")["secret"]
    helpers.call_action("package_patch", id=dataset["id"],
                        title="New title", notes="New notes")
    run_jobs()
    [body] = _bodies(receiver, "/u", secret, 1)
    assert body["data"]["title"] == "New title"
    # every field this change altered, nothing else (metadata_modified is
    # bookkeeping); "changes" comes after "data"
    assert body["changes"] == {"title": {"from": "Old title"},
                               "notes": {"from": "Old notes"}}
    assert list(body)[-2:] == ["data", "changes"]
    # stored as {field: value before} with the event, in the same commit
    [event] = model.Session.query(Event).filter(
        Event.topic == "dataset/update").all()
    assert event.changes == {"title": "Old title", "notes": "Old notes"}


def test_tags_extras_and_groups_changes_are_the_lists_package_show_gave(
        receiver, run_jobs):
    first, second = factories.Group(), factories.Group()
    dataset = factories.Dataset(
        tags=[{"name": "alpha"}, {"name": "beta"}],
        extras=[{"key": "colour", "value": "red"},
                {"key": "shape", "value": "round"}],
        groups=[{"id": first["id"]}])
    shown = helpers.call_action("package_show", id=dataset["id"])
    secret = HookFactory(receiver=receiver, path="/u",
                         topic="dataset/update")["secret"]
    editor = factories.Sysadmin()  # may use any group
    helpers.call_action(
        "package_patch", context={"user": editor["name"]}, id=dataset["id"],
        tags=[{"name": "alpha"}, {"name": "gamma"}],
        extras=[{"key": "colour", "value": "blue"},
                {"key": "shape", "value": "round"}],
        groups=[{"id": second["id"]}])
    run_jobs()
    [body] = _bodies(receiver, "/u", secret, 1)
    changes = body["changes"]
    assert set(changes) == {"tags", "extras", "groups"}
    assert changes["tags"]["from"] == shown["tags"]
    assert changes["extras"]["from"] == shown["extras"]
    assert [(g["id"], g["name"], g["title"], g["display_name"])
            for g in changes["groups"]["from"]] == [
        (g["id"], g["name"], g["title"], g["display_name"])
        for g in shown["groups"]]
    assert [t["name"] for t in body["data"]["tags"]] == ["alpha", "gamma"]


def test_adding_a_dataset_to_a_group_lists_the_groups_before(
        receiver, run_jobs):
    group = factories.Group()
    dataset = factories.Dataset()
    secret = HookFactory(receiver=receiver, path="/u",
                         topic="dataset/update")["secret"]
    helpers.call_action("member_create", id=group["id"],
                        object=dataset["id"], object_type="package",
                        capacity="public")
    run_jobs()
    [body] = _bodies(receiver, "/u", secret, 1)
    assert body["changes"] == {"groups": {"from": []}}
    assert [g["id"] for g in body["data"]["groups"]] == [group["id"]]


def test_resource_update_says_what_changed_and_the_values_before(
        receiver, run_jobs):
    dataset = factories.Dataset(resources=[
        {"url": "http://example.com/a", "name": "first", "colour": "red"},
        {"url": "http://example.com/b", "name": "second"}])
    resource = dataset["resources"][0]
    secret = HookFactory(receiver=receiver, path="/r",
                         topic="resource/update")["secret"]
    helpers.call_action("resource_patch", id=resource["id"],
                        url="http://example.com/moved", colour="blue",
                        size_class="L")
    run_jobs()
    [body] = _bodies(receiver, "/r", secret, 1)
    assert body["data"]["url"] == "http://example.com/moved"
    # extra fields are top-level fields of resource_show, as here; one that
    # did not exist before was null
    assert body["changes"] == {"url": {"from": "http://example.com/a"},
                               "colour": {"from": "red"},
                               "size_class": {"from": None}}


def test_a_field_changed_and_changed_back_in_one_transaction_is_no_change(
        receiver, run_jobs):
    dataset = factories.Dataset(title="Kept", notes="Old notes")
    secret = HookFactory(receiver=receiver, path="/u",
                         topic="dataset/update")["secret"]
    model.Session.remove()
    # one transaction, two flushes (as a plugin writing through the ORM)
    pkg = model.Package.get(dataset["id"])
    pkg.title = "Temporary"
    model.Session.flush()
    pkg.title = "Kept"
    pkg.notes = "New notes"
    model.Session.commit()
    run_jobs()
    [body] = _bodies(receiver, "/u", secret, 1)
    assert body["changes"] == {"notes": {"from": "Old notes"}}


def test_only_updates_carry_changes(deliveries, run_jobs):
    dataset = factories.Dataset(resources=[{"url": "http://example.com/a"}])
    resource = factories.Resource(package_id=dataset["id"])
    helpers.call_action("package_patch", id=dataset["id"], title="Changed")
    helpers.call_action("resource_patch", id=resource["id"], name="Changed")
    helpers.call_action("resource_delete", id=resource["id"])
    helpers.call_action("package_delete", id=dataset["id"])
    deliveries.settle(run_jobs)
    for topic in ("dataset/*", "resource/*"):
        bodies = deliveries.payloads(topic)
        assert {b["type"] for b in bodies if "changes" in b} == {
            topic.replace("*", "update")}
        assert all("changes" in b for b in bodies
                   if b["type"].endswith("/update"))


# --- organizations and groups ------------------------------------------------

GROUP_KINDS = {
    "organization": (factories.Organization, "organization_patch",
                     "organization_delete", "organization_purge",
                     "organization_show"),
    "group": (factories.Group, "group_patch", "group_delete", "group_purge",
              "group_show"),
}


@pytest.mark.parametrize("kind", ["organization", "group"])
def test_organization_and_group_events(receiver, run_jobs, kind):
    make, patch, delete, _, show = GROUP_KINDS[kind]
    secrets = {topic: HookFactory(receiver=receiver, path="/" + topic,
                                  topic=kind + "/" + topic)["secret"]
               for topic in ("create", "update", "delete", "*")}
    entity = make()
    helpers.call_action(patch, id=entity["id"], title="Renamed")
    run_jobs()
    # what anonymous visitors see, without the dataset list
    expected = helpers.call_action(show, context=anonymous(),
                                   id=entity["id"], include_datasets=False)
    helpers.call_action(delete, id=entity["id"])
    run_jobs()
    everything = _bodies(receiver, "/*", secrets["*"], 3)
    assert [b["type"] for b in everything] == [
        kind + "/create", kind + "/update", kind + "/delete"]
    for topic, body in zip(("create", "update", "delete"), everything):
        [own] = _bodies(receiver, "/" + topic, secrets[topic], 1)
        assert own["type"] == body["type"]
        assert own["data"] == body["data"]
        assert "changes" not in own
    for body in everything[:2]:
        assert body["data"] == expected
        assert "packages" not in body["data"]
    assert expected["title"] == "Renamed"
    assert everything[2]["data"] == {
        "id": entity["id"], "name": entity["name"], "title": "Renamed",
        "type": kind, "is_organization": kind == "organization",
        "state": "deleted"}


def test_organization_created_and_deleted_before_delivery_yields_both(
        receiver, run_jobs):
    secret = HookFactory(receiver=receiver, path="/o",
                         topic="organization/*")["secret"]
    org = factories.Organization()
    helpers.call_action("organization_delete", id=org["id"])
    run_jobs()
    bodies = _bodies(receiver, "/o", secret, 2)
    assert [b["type"] for b in bodies] == ["organization/create",
                                           "organization/delete"]
    for body in bodies:  # gone by delivery time: the minimal record
        assert (body["data"]["id"], body["data"]["name"],
                body["data"]["state"]) == (org["id"], org["name"], "deleted")


@pytest.mark.parametrize("kind", ["organization", "group"])
def test_purging_an_organization_or_group_fires_its_delete(
        receiver, run_jobs, kind):
    make, _, delete, purge, _ = GROUP_KINDS[kind]
    secret = HookFactory(receiver=receiver, path="/d",
                         topic=kind + "/delete")["secret"]
    purged, deleted_first = make(), make()
    helpers.call_action(purge, id=purged["id"])
    helpers.call_action(delete, id=deleted_first["id"])
    helpers.call_action(purge, id=deleted_first["id"])
    run_jobs()
    bodies = _bodies(receiver, "/d", secret, 2)
    # purging an already deleted one fires nothing more; two different
    # organizations (or groups) go out side by side, in either order
    by_id = {b["data"]["id"]: b for b in bodies}
    assert sorted(by_id) == sorted([purged["id"], deleted_first["id"]])
    assert by_id[purged["id"]]["data"]["name"] == purged["name"]


def test_memberships_are_not_organization_or_group_updates(
        receiver, run_jobs):
    org, group = factories.Organization(), factories.Group()
    secrets = {kind: HookFactory(receiver=receiver, path="/" + kind,
                                 topic=kind + "/update")["secret"]
               for kind in ("organization", "group")}
    user = factories.User()
    helpers.call_action("organization_member_create", id=org["id"],
                        username=user["name"], role="editor")
    helpers.call_action("group_member_create", id=group["id"],
                        username=user["name"], role="member")
    factories.Dataset(owner_org=org["id"], groups=[{"id": group["id"]}])
    # markers
    helpers.call_action("organization_patch", id=org["id"], title="Marker")
    helpers.call_action("group_patch", id=group["id"], title="Marker")
    run_jobs()
    for kind in ("organization", "group"):
        [body] = _bodies(receiver, "/" + kind, secrets[kind], 1)
        assert body["data"]["title"] == "Marker"


def test_organization_extras_edit_is_an_organization_update(
        receiver, run_jobs):
    org = factories.Organization(extras=[{"key": "colour", "value": "red"}])
    secret = HookFactory(receiver=receiver, path="/o",
                         topic="organization/update")["secret"]
    helpers.call_action("organization_patch", id=org["id"],
                        extras=[{"key": "colour", "value": "blue"}])
    run_jobs()
    [body] = _bodies(receiver, "/o", secret, 1)
    assert [(e["key"], e["value"]) for e in body["data"]["extras"]] == [
        ("colour", "blue")]


def test_dataset_and_resource_hooks_get_no_organization_or_group_events(
        deliveries, run_jobs):
    org, group = factories.Organization(), factories.Group()
    helpers.call_action("organization_patch", id=org["id"], title="x")
    helpers.call_action("group_patch", id=group["id"], title="x")
    helpers.call_action("organization_delete", id=org["id"])
    helpers.call_action("group_delete", id=group["id"])
    assert deliveries.settle(run_jobs) == expect()


def test_organization_and_group_events_record_their_own_entity(run_jobs):
    org, group = factories.Organization(), factories.Group()
    model.Session.remove()
    by_topic = {e.topic: e for e in model.Session.query(Event)}
    org_event = by_topic["organization/create"]
    assert (org_event.entity_id, org_event.package_id,
            org_event.organization_id, org_event.group_ids,
            org_event.restricted) == (org["id"], None, org["id"], [], False)
    group_event = by_topic["group/create"]
    assert (group_event.entity_id, group_event.package_id,
            group_event.organization_id, group_event.group_ids,
            group_event.restricted) == (group["id"], None, None,
                                        [group["id"]], False)


def test_filters_on_organization_and_group_events(receiver, run_jobs):
    org, other_org = factories.Organization(), factories.Organization()
    group, other_group = factories.Group(), factories.Group()
    dataset = factories.Dataset(owner_org=org["id"],
                                groups=[{"id": group["id"]}],
                                resources=[{"url": "http://example.com/a"}])
    run_jobs()
    hooks = {
        "org": ("organization/*", {"organization": org["name"]}),
        "group": ("group/*", {"group": group["name"]}),
        # filters that never match these topics
        "org-on-groups": ("group/*", {"organization": org["id"]}),
        "group-on-orgs": ("organization/*", {"group": group["id"]}),
        "dataset-on-orgs": ("organization/*", {"dataset": dataset["id"]}),
        "resource-on-groups": ("group/*", {
            "resource": dataset["resources"][0]["id"]}),
        # a group filter on datasets still matches the group's datasets
        "group-datasets": ("dataset/*", {"group": group["id"]}),
    }
    secrets = {name: HookFactory(receiver=receiver, path="/" + name,
                                 topic=topic, **filters)["secret"]
               for name, (topic, filters) in hooks.items()}
    for action, entity in (("organization_patch", other_org),
                           ("organization_patch", org),
                           ("group_patch", other_group),
                           ("group_patch", group)):
        helpers.call_action(action, id=entity["id"], title="Changed")
    helpers.call_action("package_patch", id=dataset["id"], notes="Marker")
    run_jobs()

    def got(name, count):
        return [(b["type"], b["data"]["id"]) for b in
                _bodies(receiver, "/" + name, secrets[name], count)]

    assert got("org", 1) == [("organization/update", org["id"])]
    assert got("group", 1) == [("group/update", group["id"])]
    assert got("group-datasets", 1) == [("dataset/update", dataset["id"])]
    for name in ("org-on-groups", "group-on-orgs", "dataset-on-orgs",
                 "resource-on-groups"):
        assert receiver.on("/" + name) == [], name


def test_deleting_a_group_is_an_update_of_its_datasets(receiver, run_jobs):
    group = factories.Group()
    dataset = factories.Dataset(groups=[{"id": group["id"]}])
    secret = HookFactory(receiver=receiver, path="/u",
                         topic="dataset/update")["secret"]
    helpers.call_action("group_delete", id=group["id"])
    run_jobs()
    [body] = _bodies(receiver, "/u", secret, 1)
    assert body["data"]["id"] == dataset["id"]
    assert body["data"]["groups"] == []
    assert [g["id"] for g in body["changes"]["groups"]["from"]] == [
        group["id"]]
