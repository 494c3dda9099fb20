"""docs/events.rst lists every message type with an example body; this test
makes each of them happen for real and checks the example against what was
delivered, so the catalogue cannot drift from the code. The same examples
(``event_examples.json``) are shown on /webhooks/events, and every real
delivery, test deliveries too, is validated against the JSON Schemas served
there and in the OpenAPI document.

After a deliberate change of what a body carries, regenerate the examples
(docs/events.rst and event_examples.json) from real deliveries and review
the diff::

    WEBHOOKS_WRITE_EVENTS_DOC=1 pytest --ckan-ini=test.ini \\
        ckanext/webhooks/tests/test_event_catalogue.py
"""
from __future__ import annotations

import json
import os
import pathlib
import re

import pytest

import ckan
from ckan.tests import factories, helpers

from ckanext.webhooks import catalogue, helpers as page_helpers
from ckanext.webhooks.examples import EXAMPLE_BODIES
from ckanext.webhooks.logic import schema
from ckanext.webhooks.tests.factories import HookFactory

DOC = pathlib.Path(__file__).resolve().parents[3] / "docs" / "events.rst"
SITE_URL = "https://data.example.org"
MESSAGE_TYPES = ("webhook/verify", "webhook/ping")

_TITLE = re.compile(r"^``([a-z]+/[a-z*]+)``$")
# CKAN versions differ in what package_show, organization_show... return
_MADE_WITH = re.compile(r"made with CKAN (\d+\.\d+\.\d+)")


def _examples(text: str) -> dict[str, tuple[int, int, str]]:
    """{type: (first line, end line, json)} of each section's first
    ``.. code:: json`` block."""
    lines = text.split("\n")
    found: dict[str, tuple[int, int, str]] = {}
    section = None
    i = 0
    while i < len(lines):
        title = _TITLE.match(lines[i])
        if title and i + 1 < len(lines) and \
                re.fullmatch(r"-{3,}", lines[i + 1]):
            section = title.group(1)
        elif lines[i].strip() == ".. code:: json" and section \
                and section not in found:
            start = i + 2
            end = start
            while end < len(lines) and (lines[end].startswith("    ")
                                        or not lines[end].strip()):
                end += 1
            while not lines[end - 1].strip():
                end -= 1
            found[section] = (start, end, "\n".join(
                line[4:] for line in lines[start:end]))
            i = end
            continue
        i += 1
    return found


def _every_type(receiver, run_jobs) -> dict[str, dict]:
    """One real delivery of every type, to an anonymous hook."""
    paths = {}
    for prefix in ("dataset", "resource", "organization", "group"):
        paths[prefix] = "/" + prefix
        HookFactory(receiver=receiver, path=paths[prefix], topic=prefix + "/*")
    ping_hook = HookFactory(receiver=receiver, path="/ping")["id"]

    org = factories.Organization(
        name="environment-agency", title="Environment Agency",
        description="Air, water and soil monitoring.", image_url="")
    group = factories.Group(name="air", title="Air",
                            description="Air quality data.", image_url="")
    run_jobs()
    dataset = factories.Dataset(
        name="air-quality-2026", title="Air quality 2026",
        notes="Hourly readings from 40 stations.", owner_org=org["id"],
        groups=[{"id": group["id"]}], license_id="cc-by",
        tags=[{"name": "air"}, {"name": "pm25"}],
        extras=[{"key": "frequency", "value": "hourly"}],
        resources=[{"url": "https://files.example.org/aq-2026.csv",
                    "name": "Readings (CSV)", "format": "CSV"}])
    run_jobs()
    helpers.call_action("package_patch", id=dataset["id"],
                        title="Air quality 2026 (provisional)",
                        tags=[{"name": "air"}, {"name": "pm25"},
                              {"name": "no2"}])
    run_jobs()
    resource = helpers.call_action(
        "resource_create", package_id=dataset["id"], format="JSON",
        url="https://files.example.org/aq-2026.json",
        name="Readings (JSON)")
    run_jobs()
    helpers.call_action("resource_patch", id=resource["id"],
                        url="https://files.example.org/v2/aq-2026.json")
    run_jobs()
    helpers.call_action("resource_delete", id=resource["id"])
    run_jobs()
    helpers.call_action("package_delete", id=dataset["id"])
    run_jobs()
    helpers.call_action("organization_patch", id=org["id"],
                        description="Air, water, soil and noise.")
    helpers.call_action("group_patch", id=group["id"],
                        title="Air and climate")
    run_jobs()
    helpers.call_action("group_delete", id=group["id"])
    helpers.call_action("organization_delete", id=org["id"])
    run_jobs()
    helpers.call_action("webhook_ping", id=ping_hook)
    run_jobs()

    counts = {"dataset": 3, "resource": 3, "organization": 3, "group": 3}
    bodies = {}
    for prefix, path in paths.items():
        for request in receiver.wait_for(counts[prefix], path):
            bodies[request.json["type"]] = request.json
    [ping] = [r.json for r in receiver.wait_for(2, "/ping")
              if r.json["type"] == "webhook/ping"]
    bodies["webhook/ping"] = ping
    return bodies


def _verify_body(receiver, run_jobs) -> dict:
    HookFactory(receiver=receiver, path="/verify")
    run_jobs()
    [request] = receiver.wait_for(1, "/verify")
    return request.json


def _test_deliveries(receiver, run_jobs) -> dict[str, dict]:
    """A test delivery (webhook_ping with a topic) of every topic: made-up
    data on this portal, which has nothing public."""
    hook = HookFactory(receiver=receiver, path="/tests",
                       topics=[t for t in schema.TOPICS
                               if schema.is_wildcard(t)])
    types = [t for t in catalogue.message_types()
             if t in schema.TOPICS]
    for kind in types:
        helpers.call_action("webhook_ping", id=hook["id"], topic=kind)
    run_jobs()
    bodies = {r.json["type"]: r.json
              for r in receiver.wait_for(len(types), "/tests")}
    assert sorted(bodies) == sorted(types)
    assert all(body["test"] is True for body in bodies.values())
    return bodies


def _validate_against_the_served_schemas(bodies, app) -> None:
    """Each body against its type's JSON Schema and against the OpenAPI
    document, both as /webhooks/events serves them."""
    import jsonschema
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012
    document = app.get("/webhooks/events/openapi.json").json
    assert document["openapi"] == "3.1.0"
    assert sorted(document["webhooks"]) == sorted(catalogue.message_types())
    # the document's own references (#/components/schemas/...) resolve
    # within it
    registry = Registry().with_resource(
        "urn:openapi", DRAFT202012.create_resource(document))
    for kind, body in bodies.items():
        name, _, change = kind.partition("/")
        own = app.get("/webhooks/events/{}/{}.json".format(name, change))
        assert own.headers["Content-Type"].startswith(
            "application/schema+json")
        topic_schema = own.json
        jsonschema.Draft202012Validator.check_schema(topic_schema)
        jsonschema.Draft202012Validator(topic_schema).validate(body)
        operation = document["webhooks"][kind]["post"]
        ref = operation["requestBody"]["content"]["application/json"][
            "schema"]["$ref"]
        jsonschema.Draft202012Validator(
            {"$ref": "urn:openapi" + ref}, registry=registry).validate(body)


def _write(examples, bodies) -> None:
    lines = _MADE_WITH.sub("made with CKAN " + ckan.__version__,
                           DOC.read_text()).split("\n")
    # from the end, so the line numbers of earlier blocks stay right
    for kind, (start, end, _) in sorted(examples.items(),
                                        key=lambda item: -item[1][0]):
        text = json.dumps(bodies[kind], indent=2, ensure_ascii=False)
        lines[start:end] = ["    " + line for line in text.split("\n")]
    DOC.write_text("\n".join(lines))
    ordered = {kind: bodies[kind] for kind in catalogue.message_types()}
    EXAMPLE_BODIES.write_text(json.dumps(
        ordered, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


@pytest.mark.usefixtures("webhooks")
@pytest.mark.ckan_config("ckan.site_url", SITE_URL)
def test_the_catalogue_shows_every_type_as_it_is_delivered(
        receiver, run_jobs, ckan_config, monkeypatch, app):
    text = DOC.read_text()
    examples = _examples(text)
    made_with = _MADE_WITH.search(text).group(1)
    types = [t for t in schema.TOPICS if not t.endswith("*")]
    assert sorted(examples) == sorted(types + list(MESSAGE_TYPES))

    bodies = _every_type(receiver, run_jobs)
    test_bodies = _test_deliveries(receiver, run_jobs)
    monkeypatch.setitem(ckan_config, "ckanext.webhooks.verify_intent", True)
    bodies["webhook/verify"] = _verify_body(receiver, run_jobs)
    assert sorted(bodies) == sorted(examples)

    if os.environ.get("WEBHOOKS_WRITE_EVENTS_DOC"):
        _write(examples, bodies)
        pytest.skip("docs/events.rst written from real deliveries")

    # what the pages show is what docs/events.rst shows
    shown = json.loads(EXAMPLE_BODIES.read_text(encoding="utf-8"))
    assert list(shown) == catalogue.message_types()
    for kind, (_, _, block) in examples.items():
        assert shown[kind] == json.loads(block), kind

    for every in (bodies, test_bodies, shown):
        _validate_against_the_served_schemas(every, app)

    for kind, (_, _, block) in examples.items():
        example, real = json.loads(block), bodies[kind]
        assert example["type"] == kind
        assert list(example) == list(real), kind
        # our own records always; what CKAN's show actions return on the
        # CKAN version the examples were made with
        ours = kind.endswith("/delete") or kind.startswith("webhook/")
        if ours or ckan.__version__ == made_with:
            assert set(example["data"]) == set(real["data"]), kind
        if "changes" in real:
            assert set(example["changes"]) == set(real["changes"]), kind
            for field, change in example["changes"].items():
                assert set(change) == {"from"}, kind
                assert field in example["data"], kind


def test_every_topic_has_a_label_on_the_pages():
    # the labels live with the pages' template helpers
    with_labels = page_helpers._topic_labels
    assert sorted(with_labels()) == sorted(schema.TOPICS)


@pytest.mark.usefixtures("webhooks")
def test_the_catalogue_page_shows_every_type_and_is_linked(app, receiver):
    from lxml.html import document_fromstring as parse
    page = parse(app.get("/webhooks/events").body)
    for kind in catalogue.message_types():
        section = page.cssselect("#" + catalogue.anchor(kind))
        assert section, kind
        text = section[0].text_content()
        assert kind in text
        assert catalogue.description(kind)[:40] in text
        assert "Who gets it" in text and catalogue.audience(kind)[:40] in text
        example = section[0].cssselect(".webhooks-example pre")
        assert json.loads(example[0].text_content())["type"] == kind
        [link] = section[0].cssselect("a.webhooks-schema-link")
        assert app.get(link.get("href")).json["properties"]["type"] == {
            "const": kind}
    assert page.cssselect("a#webhooks-openapi")[0].get("href") == \
        "/webhooks/events/openapi.json"
    assert app.get("/webhooks/events/dataset/explode.json",
                   status=404).status_code == 404

    # the create form links to it, each event to its own section
    form = parse(app.get("/webhooks").body)
    links = {a.get("href") for a in form.cssselect("#field-topics a")}
    assert "/webhooks/events" in links
    assert "/webhooks/events#dataset-create" in links
    # and so does each hook's page
    hook = HookFactory(receiver=receiver, topics=["dataset/*"])
    shown = parse(app.get("/webhooks/" + hook["id"]).body)
    hrefs = {a.get("href") for a in shown.cssselect(".webhooks-details a")}
    assert "/webhooks/events#kind-dataset" in hrefs
