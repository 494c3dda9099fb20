"""Who receives what: the leak matrix.

Dataset states × hook owners × {dataset, resource topics}, with a real
receiver. Absence is asserted only after a later public marker event has
reached the same hook, so that slowness cannot pass as absence.
"""
from __future__ import annotations

import pytest

import ckan.model as model
import ckan.plugins.toolkit as tk
from ckan.tests import factories, helpers

from ckanext.webhooks import access
from ckanext.webhooks.model import Event

OWNERS = ("anonymous", "member", "outsider", "sysadmin")


class World:
    """An organization, four hook owners, a hook per owner and topic."""

    def __init__(self, receiver):
        self.receiver = receiver
        self.sysadmin = factories.Sysadmin()
        self.member = factories.User()
        self.outsider = factories.User()
        self.org = factories.Organization(users=[
            {"name": self.member["name"], "capacity": "member"}])
        self.other_org = factories.Organization()
        self.public_dataset = factories.Dataset()  # for markers
        self.hooks = {}
        for owner in OWNERS:
            for kind in ("dataset", "resource"):
                path = "/{}/{}".format(owner, kind)
                self.hooks[(owner, kind)] = helpers.call_action(
                    "webhook_create", context=self.context(owner),
                    topic=kind + "/*", address=receiver.url(path))

    def context(self, owner):
        if owner == "anonymous":
            return {"user": ""}
        user = getattr(self, owner)
        return {"user": user["name"], "ignore_auth": False}

    def marker(self):
        """A public dataset and resource event that every hook gets."""
        marker = factories.Dataset(title="marker")
        resource = factories.Resource(package_id=self.public_dataset["id"],
                                      name="marker")
        return marker["id"], resource["id"]

    def received(self, run_jobs):
        """Run the worker, then what each hook got before the marker."""
        dataset_marker, resource_marker = self.marker()
        run_jobs()
        got = {}
        for (owner, kind), hook_id in self.hooks.items():
            path = "/{}/{}".format(owner, kind)
            marker_id = dataset_marker if kind == "dataset" \
                else resource_marker
            requests = self.receiver.on(path)
            ids = [r.json["data"]["id"] for r in requests]
            assert marker_id in ids, "marker not delivered to " + path
            got[(owner, kind)] = [
                (r.json["type"], r.json["data"]["id"]) for r in requests
                if r.json["data"]["id"] not in (dataset_marker,
                                                resource_marker)]
        return got


@pytest.fixture
def world(webhooks, receiver):
    return World(receiver)


def _who_got(got, kind, event):
    return {owner for owner in OWNERS if event in got[(owner, kind)]}


def test_public_dataset_reaches_everyone(world, run_jobs):
    dataset = factories.Dataset(owner_org=world.org["id"])
    resource = factories.Resource(package_id=dataset["id"])
    got = world.received(run_jobs)
    assert _who_got(got, "dataset", ("dataset/create", dataset["id"])) == \
        set(OWNERS)
    assert _who_got(got, "resource", ("resource/create", resource["id"])) \
        == set(OWNERS)


@pytest.mark.parametrize("state", ["private", "draft"])
def test_private_and_draft_reach_only_readers(world, run_jobs, state):
    extra = {"private": True} if state == "private" else {"state": "draft"}
    dataset = factories.Dataset(owner_org=world.org["id"], **extra)
    resource = factories.Resource(package_id=dataset["id"])
    helpers.call_action("package_patch", id=dataset["id"], notes="edited")
    got = world.received(run_jobs)
    readers = {"member", "sysadmin"}
    if state == "private":
        assert _who_got(got, "dataset", ("dataset/create", dataset["id"])) \
            == readers
    assert _who_got(got, "dataset", ("dataset/update", dataset["id"])) == \
        readers
    assert _who_got(got, "resource", ("resource/create", resource["id"])) \
        == readers
    for owner in ("anonymous", "outsider"):
        assert got[(owner, "dataset")] == []
        assert got[(owner, "resource")] == []


def test_private_data_is_what_the_owner_may_see(world, run_jobs):
    dataset = factories.Dataset(owner_org=world.org["id"], private=True)
    world.received(run_jobs)
    [request] = [r for r in world.receiver.on("/member/dataset")
                 if r.json["data"]["id"] == dataset["id"]]
    expected = helpers.call_action(
        "package_show", context={"user": world.member["name"],
                                 "ignore_auth": False}, id=dataset["id"])
    assert request.json["data"]["name"] == expected["name"]
    assert request.json["data"]["private"] is True


def test_deleted_public_dataset_reaches_everyone_with_id_and_name(
        world, run_jobs):
    dataset = factories.Dataset(owner_org=world.org["id"])
    helpers.call_action("package_delete", id=dataset["id"])
    got = world.received(run_jobs)
    for owner in OWNERS:
        assert got[(owner, "dataset")] == [
            ("dataset/create", dataset["id"]),
            ("dataset/delete", dataset["id"])]
    [delete] = [r for r in world.receiver.on("/anonymous/dataset")
                if r.json["type"] == "dataset/delete"]
    assert delete.json["data"]["name"] == dataset["name"]


def test_deleted_private_dataset_reaches_only_readers(world, run_jobs):
    dataset = factories.Dataset(owner_org=world.org["id"], private=True)
    helpers.call_action("package_delete", id=dataset["id"])
    helpers.call_action("dataset_purge", id=dataset["id"])
    got = world.received(run_jobs)
    readers = {"member", "sysadmin"}
    assert _who_got(got, "dataset", ("dataset/delete", dataset["id"])) == \
        readers
    assert got[("anonymous", "dataset")] == []
    assert got[("outsider", "dataset")] == []


def test_made_private_before_delivery_is_not_delivered_to_the_public(
        world, run_jobs):
    dataset = factories.Dataset(owner_org=world.org["id"])
    helpers.call_action("package_patch", id=dataset["id"], private=True)
    got = world.received(run_jobs)
    create = ("dataset/create", dataset["id"])
    update = ("dataset/update", dataset["id"])
    assert _who_got(got, "dataset", create) == {"member", "sysadmin"}
    assert _who_got(got, "dataset", update) == {"member", "sysadmin"}


def test_made_public_delivers_only_events_from_then_on(world, run_jobs):
    dataset = factories.Dataset(owner_org=world.org["id"], private=True)
    helpers.call_action("package_patch", id=dataset["id"], private=False)
    got = world.received(run_jobs)
    assert got[("anonymous", "dataset")] == [
        ("dataset/update", dataset["id"])]
    assert got[("outsider", "dataset")] == [
        ("dataset/update", dataset["id"])]
    assert got[("member", "dataset")] == [
        ("dataset/create", dataset["id"]), ("dataset/update", dataset["id"])]


def test_moved_to_another_organization_follows_the_new_readers(
        world, run_jobs):
    dataset = factories.Dataset(owner_org=world.org["id"], private=True)
    helpers.call_action("package_patch", id=dataset["id"],
                        owner_org=world.other_org["id"])
    got = world.received(run_jobs)
    # the member reads the old organization only: by delivery time the
    # dataset is out of their reach, so neither event reaches them
    assert got[("member", "dataset")] == []
    assert _who_got(got, "dataset", ("dataset/update", dataset["id"])) == \
        {"sysadmin"}


def test_member_removed_before_delivery_gets_nothing(world, run_jobs):
    helpers.call_action("organization_member_create", id=world.org["id"],
                        username=world.outsider["name"], role="member")
    dataset = factories.Dataset(owner_org=world.org["id"], private=True)
    helpers.call_action("organization_member_delete",
                        context={"user": world.sysadmin["name"]},
                        id=world.org["id"], username=world.outsider["name"])
    got = world.received(run_jobs)
    assert got[("outsider", "dataset")] == []
    assert _who_got(got, "dataset", ("dataset/create", dataset["id"])) == \
        {"member", "sysadmin"}


def test_member_added_later_gets_events_delivered_after(world, run_jobs):
    dataset = factories.Dataset(owner_org=world.org["id"], private=True)
    helpers.call_action("organization_member_create", id=world.org["id"],
                        username=world.outsider["name"], role="member")
    got = world.received(run_jobs)
    assert _who_got(got, "dataset", ("dataset/create", dataset["id"])) == \
        {"member", "outsider", "sysadmin"}


def test_completed_draft_is_announced_as_created(world, run_jobs):
    # the web form creates a draft, adds resources, then activates it
    dataset = factories.Dataset(owner_org=world.org["id"], state="draft")
    helpers.call_action("package_patch", id=dataset["id"], state="active")
    got = world.received(run_jobs)
    for owner in OWNERS:
        assert got[(owner, "dataset")] == [("dataset/create", dataset["id"])]


# --- filters ------------------------------------------------------------

@pytest.mark.usefixtures("webhooks")
def test_filters_narrow_what_a_hook_receives(receiver, run_jobs):
    org = factories.Organization()
    group = factories.Group()
    in_org = factories.Dataset(owner_org=org["id"])
    in_group = factories.Dataset(groups=[{"id": group["id"]}])
    other = factories.Dataset()
    res_in_org = factories.Resource(package_id=in_org["id"])
    res_other = factories.Resource(package_id=other["id"])
    run_jobs()

    hooks = {
        "dataset": dict(topic="dataset/*", dataset=other["name"]),
        "dataset-res": dict(topic="resource/*", dataset=other["id"]),
        "org": dict(topic="dataset/*", organization=org["name"]),
        "org-res": dict(topic="resource/*", organization=org["id"]),
        "group": dict(topic="dataset/*", group=group["name"]),
        "group-res": dict(topic="resource/*", group=group["id"]),
        "resource": dict(topic="resource/*", resource=res_other["id"]),
    }
    ids = {name: helpers.call_action("webhook_create",
                                     address=receiver.url("/" + name), **f)
           for name, f in hooks.items()}
    shown = helpers.call_action("webhook_show", id=ids["dataset"])
    assert shown["filters"]["dataset"] == other["id"]  # name in, id stored

    for dataset in (in_org, in_group, other):
        helpers.call_action("package_patch", id=dataset["id"], notes="x")
    for resource in (res_in_org, res_other):
        helpers.call_action("resource_patch", id=resource["id"],
                            description="x")
    run_jobs()

    def got(name):
        return [(r.json["type"], r.json["data"]["id"])
                for r in receiver.on("/" + name)]

    assert got("dataset") == [("dataset/update", other["id"])]
    assert got("dataset-res") == [("resource/update", res_other["id"])]
    assert got("org") == [("dataset/update", in_org["id"])]
    assert got("org-res") == [("resource/update", res_in_org["id"])]
    assert got("group") == [("dataset/update", in_group["id"])]
    assert got("group-res") == []  # a group filter matches its datasets
    assert got("resource") == [("resource/update", res_other["id"])]


@pytest.mark.usefixtures("webhooks")
def test_organization_filter_uses_the_organization_at_event_time(
        receiver, run_jobs):
    first, second = factories.Organization(), factories.Organization()
    dataset = factories.Dataset(owner_org=first["id"])
    helpers.call_action("webhook_create", topic="dataset/update",
                        organization=first["id"],
                        address=receiver.url("/first"))
    helpers.call_action("webhook_create", topic="dataset/update",
                        organization=second["id"],
                        address=receiver.url("/second"))
    helpers.call_action("package_patch", id=dataset["id"], notes="one")
    helpers.call_action("package_patch", id=dataset["id"],
                        owner_org=second["id"])
    run_jobs()
    assert len(receiver.on("/first")) == 1
    assert len(receiver.on("/second")) == 1


@pytest.mark.usefixtures("webhooks")
def test_filter_on_unseeable_dataset_is_refused_like_a_missing_one():
    org = factories.Organization()
    private = factories.Dataset(owner_org=org["id"], private=True)
    errors = []
    for value in (private["id"], "no-such-dataset"):
        with pytest.raises(tk.ValidationError) as e:
            helpers.call_action("webhook_create", context={"user": ""},
                                topic="dataset/*", dataset=value,
                                address="http://example.com/hook")
        errors.append(e.value.error_dict)
    assert errors[0] == errors[1] == {"dataset": ["Dataset not found"]}


@pytest.mark.usefixtures("webhooks")
def test_member_may_filter_on_a_private_dataset_they_read():
    member = factories.User()
    org = factories.Organization(users=[{"name": member["name"],
                                         "capacity": "member"}])
    private = factories.Dataset(owner_org=org["id"], private=True)
    hook_id = helpers.call_action(
        "webhook_create", context={"user": member["name"],
                                   "ignore_auth": False},
        topic="dataset/*", dataset=private["name"],
        address="http://example.com/hook")
    assert helpers.call_action("webhook_show", id=hook_id)["filters"][
        "dataset"] == private["id"]


# --- listing ------------------------------------------------------------

@pytest.mark.usefixtures("webhooks")
@pytest.mark.ckan_config("ckanext.webhooks.allow_anonymous", "false")
def test_anonymous_creation_can_be_turned_off():
    with pytest.raises(tk.NotAuthorized):
        helpers.call_action("webhook_create", context={
            "user": "", "ignore_auth": False}, topic="dataset/create",
            address="http://example.com/hook")
    user = factories.User()
    assert helpers.call_action(
        "webhook_create", context={"user": user["name"],
                                   "ignore_auth": False},
        topic="dataset/create", address="http://example.com/hook")


# --- deletion records carry only values their owner could see (13.4) ---------

def test_deletion_record_has_the_values_each_owner_could_see(
        world, run_jobs):
    dataset = factories.Dataset(owner_org=world.org["id"], name="was-public",
                                title="Public title")
    # one change: made private, renamed and deleted
    helpers.call_action("package_patch", id=dataset["id"], private=True,
                        name="secret-name", title="Secret title",
                        state="deleted")
    world.received(run_jobs)

    def record(owner):
        [request] = [r for r in world.receiver.on(
            "/{}/dataset".format(owner)) if r.json["type"] ==
            "dataset/delete"]
        return request.json["data"]

    # they could see it only before the change: the values from before
    for owner in ("anonymous", "outsider"):
        assert (record(owner)["name"], record(owner)["title"]) == (
            "was-public", "Public title"), owner
    # they can see what the change left: the values it left
    for owner in ("member", "sysadmin"):
        assert (record(owner)["name"], record(owner)["title"]) == (
            "secret-name", "Secret title"), owner


def test_deletion_record_of_a_dataset_moved_and_deleted_at_once(
        world, run_jobs):
    member_of_other = factories.User()
    helpers.call_action("organization_member_create",
                        id=world.other_org["id"],
                        username=member_of_other["name"], role="member")
    dataset = factories.Dataset(owner_org=world.org["id"], private=True)
    helpers.call_action("package_patch", id=dataset["id"],
                        owner_org=world.other_org["id"], state="deleted")
    got = world.received(run_jobs)
    # a reader of the old organization could see it before the change
    assert _who_got(got, "dataset", ("dataset/delete", dataset["id"])) == \
        {"member", "sysadmin"}
    [request] = [r for r in world.receiver.on("/member/dataset")
                 if r.json["type"] == "dataset/delete"]
    assert request.json["data"]["owner_org"] == world.org["id"]


# --- changes: only what the owner could see before the change -----------------

def _changes(world, owner, kind, event_type, entity_id):
    [request] = [r for r in world.receiver.on("/{}/{}".format(owner, kind))
                 if (r.json["type"], r.json["data"]["id"]) == (
                     event_type, entity_id)]
    return request.json.get("changes")


def test_changes_of_a_dataset_made_public_are_shown_only_to_its_readers(
        world, run_jobs):
    dataset = factories.Dataset(owner_org=world.org["id"], private=True,
                                title="Secret title")
    resource = factories.Resource(package_id=dataset["id"], name="Secret")
    helpers.call_action("package_patch", id=dataset["id"], private=False,
                        title="Public title")
    helpers.call_action("resource_patch", id=resource["id"], name="Public")
    got = world.received(run_jobs)
    update = ("dataset/update", dataset["id"])
    assert _who_got(got, "dataset", update) == set(OWNERS)
    for owner in ("anonymous", "outsider"):
        assert _changes(world, owner, "dataset", *update) is None, owner
    for owner in ("member", "sysadmin"):
        assert _changes(world, owner, "dataset", *update) == {
            "private": {"from": True}, "title": {"from": "Secret title"}}
    # the resource changed while the dataset was public: everyone sees it
    for owner in OWNERS:
        assert _changes(world, owner, "resource", "resource/update",
                        resource["id"]) == {"name": {"from": "Secret"}}


def test_changes_of_a_resource_whose_dataset_was_made_public_at_once(
        world, run_jobs):
    dataset = factories.Dataset(owner_org=world.org["id"], private=True,
                                resources=[{"url": "http://example.com/s",
                                            "name": "Secret"}])
    resource = dataset["resources"][0]
    shown = helpers.call_action("package_show", id=dataset["id"])
    shown["private"] = False
    shown["resources"][0]["name"] = "Public"
    helpers.call_action("package_update", **shown)  # one change: both
    world.received(run_jobs)
    update = ("resource/update", resource["id"])
    for owner in ("anonymous", "outsider"):
        assert _changes(world, owner, "resource", *update) is None, owner
    assert _changes(world, "member", "resource", *update) == {
        "name": {"from": "Secret"}}


def test_changes_list_only_fields_the_owners_data_carries(world, run_jobs):
    dataset = factories.Dataset(resources=[
        {"url": "http://example.com/a", "colour": "red", "name": "a"}])
    resource = dataset["resources"][0]
    updated = dict(resource, name="b")
    del updated["colour"]  # a field that no longer exists
    helpers.call_action("resource_update", **updated)
    world.received(run_jobs)
    for owner in OWNERS:
        assert _changes(world, owner, "resource", "resource/update",
                        resource["id"]) == {"name": {"from": "a"}}
    [event] = model.Session.query(Event).filter(
        Event.topic == "resource/update").all()
    assert event.changes == {"name": "a", "colour": "red"}


# --- organizations and groups ---------------------------------------------------

def _until_marker(receiver, path, marker_id):
    """Requests on ``path`` once the marker's has arrived."""
    got = receiver.on(path)
    while not any(r.json["data"]["id"] == marker_id for r in got):
        more = receiver.wait_for(len(got) + 1, path)
        assert len(more) > len(got), "marker never arrived on " + path
        got = more
    return got


@pytest.mark.usefixtures("webhooks")
@pytest.mark.parametrize("kind", ["organization", "group"])
def test_organization_and_group_events_follow_their_access(
        receiver, run_jobs, kind):
    """Active ones reach everyone; one that is not active only its members
    and sysadmins; a deletion everyone who could see it before."""
    sysadmin, member, outsider = (factories.Sysadmin(), factories.User(),
                                  factories.User())
    make = factories.Organization if kind == "organization" \
        else factories.Group
    entity = make(users=[{"name": member["name"], "capacity": "member"}])
    owners = {"anonymous": {"user": ""}}
    for name, user in (("sysadmin", sysadmin), ("member", member),
                       ("outsider", outsider)):
        owners[name] = {"user": user["name"], "ignore_auth": False}
    for owner, context in owners.items():
        helpers.call_action("webhook_create", context=context,
                            topic=kind + "/*",
                            address=receiver.url("/" + owner))
    admin = {"user": sysadmin["name"]}
    for change in ({"title": "Public"}, {"state": "pending"},
                   {"title": "Not active"}, {"state": "active"}):
        helpers.call_action(kind + "_patch", context=dict(admin),
                            id=entity["id"], **change)
        run_jobs()  # delivered before the next change
    helpers.call_action(kind + "_delete", context=dict(admin),
                        id=entity["id"])
    marker = make()
    run_jobs()

    def got(owner):
        return [(r.json["type"].split("/")[1], r.json["data"]["title"])
                for r in _until_marker(receiver, "/" + owner, marker["id"])
                if r.json["data"]["id"] == entity["id"]]

    for owner in ("anonymous", "outsider"):
        assert got(owner) == [("update", "Public"), ("update", "Not active"),
                              ("delete", "Not active")], owner
    for owner in ("member", "sysadmin"):
        assert got(owner) == [
            ("update", "Public"), ("update", "Public"),
            ("update", "Not active"), ("update", "Not active"),
            ("delete", "Not active")], owner


@pytest.mark.usefixtures("webhooks")
def test_deletion_record_of_a_renamed_and_deleted_organization(
        receiver, run_jobs):
    org = factories.Organization(title="Before")
    helpers.call_action("webhook_create", context={"user": ""},
                        topic="organization/delete",
                        address=receiver.url("/anonymous"))
    sysadmin = factories.Sysadmin()
    helpers.call_action("webhook_create", context={
        "user": sysadmin["name"], "ignore_auth": False},
        topic="organization/delete", address=receiver.url("/sysadmin"))
    helpers.call_action("organization_patch",
                        context={"user": sysadmin["name"]}, id=org["id"],
                        title="After", state="deleted")
    run_jobs()
    [anonymous] = receiver.wait_for(1, "/anonymous")
    assert anonymous.json["data"]["title"] == "Before"
    [admin] = receiver.wait_for(1, "/sysadmin")
    assert admin.json["data"]["title"] == "After"


@pytest.mark.usefixtures("webhooks")
def test_sight_tells_apart_owners_whose_changes_or_records_differ():
    """Owners alike in what they may see now can differ in what they could
    see before the change (``changes``) or as it left it (deletion
    records); ``access.sight`` says so, for sharing payloads safely."""
    member, outsider = factories.User(), factories.User()
    org = factories.Organization(users=[{"name": member["name"],
                                         "capacity": "member"}])
    dataset = factories.Dataset(owner_org=org["id"], private=True)
    helpers.call_action("package_patch", id=dataset["id"], private=False)
    other = factories.Dataset(owner_org=org["id"])
    helpers.call_action("package_patch", id=other["id"], private=True,
                        state="deleted")
    events = {e.entity_id: e for e in model.Session.query(Event).filter(
        Event.topic.in_(["dataset/update", "dataset/delete"]))}
    viewers = {name: access.Viewer(user["id"])
               for name, user in (("member", member),
                                  ("outsider", outsider))}
    made_public, hidden_and_deleted = events[dataset["id"]], \
        events[other["id"]]
    assert access.sight(made_public, viewers["member"]) == (True, True)
    assert access.sight(made_public, viewers["outsider"]) == (False, True)
    assert access.sight(hidden_and_deleted, viewers["member"]) == (
        True, True)
    assert access.sight(hidden_and_deleted, viewers["outsider"]) == (
        True, False)
