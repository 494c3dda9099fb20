import pytest
from ckan.tests import factories, helpers


@pytest.mark.usefixtures("webhooks")
def test_dataset_create_is_delivered(receiver, run_jobs):
    hook_id = helpers.call_action("webhook_create", topic="dataset/create",
                                  address=receiver.url())
    hook = helpers.call_action("webhook_show", id=hook_id)
    dataset = factories.Dataset()
    run_jobs()
    got = receiver.wait_for(1)
    assert len(got) == 1
    payload = got[0].verify(hook["secret"])
    assert payload["type"] == "dataset/create"
    assert payload["data"]["id"] == dataset["id"]
    assert payload["hook_id"] == hook_id
