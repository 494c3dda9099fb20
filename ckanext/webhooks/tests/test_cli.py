"""``ckan webhooks ...`` with hook ids that look like options."""
from __future__ import annotations

import secrets

import pytest
import sqlalchemy as sa

import ckan.model as model
from ckan.tests import factories

from ckanext.webhooks import model as webhooks_model
from ckanext.webhooks.tests.factories import HookFactory


def test_new_ids_never_start_with_a_dash(monkeypatch):
    # the first draw starts with "-": it must be drawn again, not used
    draws = iter(["-" + "A" * 42, "B" * 43])
    monkeypatch.setattr(secrets, "token_urlsafe", lambda n: next(draws))
    assert webhooks_model.new_hook_id() == "B" * 43


def test_ids_keep_their_length_and_alphabet():
    ids = [webhooks_model.new_hook_id() for _ in range(2000)]
    assert all(len(i) == 43 and not i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)


def _dash_hook(receiver) -> str:
    """A hook whose id starts with "-", as older hooks may."""
    hook_id = HookFactory(receiver=receiver)["id"]
    dashed = "-X" + hook_id[2:]
    model.Session.execute(sa.text(
        "UPDATE webhooks_hook SET id = :new WHERE id = :old"),
        {"new": dashed, "old": hook_id})
    model.Session.commit()
    return dashed


@pytest.mark.usefixtures("webhooks")
@pytest.mark.parametrize("separator", [[], ["--"]])
def test_cli_takes_ids_that_start_with_a_dash(cli, receiver, run_jobs,
                                              separator):
    from ckan.cli.cli import ckan
    hook_id = _dash_hook(receiver)
    factories.Dataset()
    run_jobs()

    result = cli.invoke(ckan, ["webhooks", "show", *separator, hook_id])
    assert result.exit_code == 0, result.output
    assert hook_id in result.output

    result = cli.invoke(ckan, ["webhooks", "deliveries", *separator,
                               hook_id])
    assert result.exit_code == 0, result.output
    # CKAN may log to the same output first (logging stays on, as it should)
    message_id = [line for line in result.output.splitlines()
                  if line.startswith("msg_")][0].split()[0]

    result = cli.invoke(ckan, ["webhooks", "redeliver", *separator, hook_id,
                               message_id])
    assert result.exit_code == 0, result.output
    run_jobs()
    assert [r.headers["webhook-id"] for r in receiver.requests] == \
        [message_id, message_id]

    result = cli.invoke(ckan, ["webhooks", "delete", *separator, hook_id])
    assert result.exit_code == 0, result.output
    result = cli.invoke(ckan, ["webhooks", "show", *separator, hook_id])
    assert result.exit_code != 0 and "not found" in result.output
