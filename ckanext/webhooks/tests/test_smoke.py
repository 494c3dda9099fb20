import pytest
from ckan.tests import factories

from ckanext.webhooks.tests.factories import HookFactory

pytestmark = pytest.mark.usefixtures("webhooks")


def test_dataset_create_is_delivered(receiver, run_jobs):
    hook = HookFactory(receiver=receiver)
    dataset = factories.Dataset()
    run_jobs()
    got = receiver.wait_for(1)
    assert len(got) == 1
    payload = got[0].verify(hook["secret"])
    assert payload["type"] == "dataset/create"
    assert payload["data"]["id"] == dataset["id"]
    assert payload["hook_id"] == hook["id"]
