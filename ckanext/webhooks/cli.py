"""``ckan webhooks ...``: the delivery worker and operators' tools."""
from __future__ import annotations

import json

import click

import ckan.plugins.toolkit as tk

# the blanket registers what __all__ names (click groups are not functions)
__all__ = ["webhooks"]


@click.group(short_help="Webhooks: run the delivery worker, inspect hooks")
def webhooks():
    """Webhooks: run the delivery worker, inspect and manage hooks."""


@webhooks.command()
@click.option("--burst", is_flag=True,
              help="Exit once nothing is due instead of waiting for more.")
def worker(burst: bool):
    """Deliver webhooks: work the ckanext.webhooks.queue queue.

    Runs RQ's scheduler (delayed retries) and sweeps the database every
    ckanext.webhooks.sweep_interval seconds for lost work.
    """
    from ckanext.webhooks.worker import run_worker
    run_worker(burst=burst)


@webhooks.command()
def sweep():
    """Tidy up now: unverified and failing hooks, old records."""
    from ckanext.webhooks.pipeline import sweep as sweeping
    counts = sweeping.sweep()
    click.echo(json.dumps(counts))


# Hook ids are URL-safe and older ones may start with "-": such an argument
# is taken as the id, not as an unknown option (``--`` before it works too).
ID_ARGUMENTS = {"ignore_unknown_options": True}


def _sysadmin_context():
    site_user = tk.get_action("get_site_user")({"ignore_auth": True}, {})
    return {"user": site_user["name"], "ignore_auth": True}


@webhooks.command(name="list")
@click.option("--limit", default=100, show_default=True)
@click.option("--offset", default=0, show_default=True)
def list_hooks(limit: int, offset: int):
    """List all hooks (id, status, topic, address)."""
    hooks = tk.get_action("webhook_list")(
        _sysadmin_context(), {"limit": limit, "offset": offset})
    for hook in hooks:
        click.echo("{id}  {status:8}  {topic:16}  {address}".format(**hook))
    if not hooks:
        click.echo("No hooks.")


@webhooks.command(context_settings=ID_ARGUMENTS)
@click.argument("hook_id")
def show(hook_id: str):
    """Show one hook as JSON."""
    try:
        hook = tk.get_action("webhook_show")(_sysadmin_context(),
                                             {"id": hook_id})
    except tk.ObjectNotFound:
        raise click.ClickException("Webhook not found")
    click.echo(json.dumps(hook, indent=2))


@webhooks.command(context_settings=ID_ARGUMENTS)
@click.argument("hook_id")
def delete(hook_id: str):
    """Delete one hook and its delivery log."""
    try:
        tk.get_action("webhook_delete")(_sysadmin_context(), {"id": hook_id})
    except tk.ObjectNotFound:
        raise click.ClickException("Webhook not found")
    click.echo("Deleted " + hook_id)


@webhooks.command(context_settings=ID_ARGUMENTS)
@click.argument("hook_id")
@click.option("--limit", default=20, show_default=True)
def deliveries(hook_id: str, limit: int):
    """List a hook's recent deliveries, newest first."""
    try:
        rows = tk.get_action("webhook_delivery_list")(
            _sysadmin_context(), {"id": hook_id, "limit": limit})
    except tk.ObjectNotFound:
        raise click.ClickException("Webhook not found")
    for row in rows:
        click.echo("{id}  {type:16}  {status:9}  attempts={attempts}  "
                   "http={response_status}  {created}".format(**row))
    if not rows:
        click.echo("No deliveries.")


@webhooks.command(context_settings=ID_ARGUMENTS)
@click.argument("hook_id")
@click.argument("message_id")
def redeliver(hook_id: str, message_id: str):
    """Deliver a message again (same message id)."""
    try:
        tk.get_action("webhook_redeliver")(
            _sysadmin_context(), {"id": hook_id, "delivery_id": message_id})
    except tk.ObjectNotFound as e:
        raise click.ClickException(str(e) or "Not found")
    click.echo("Queued " + message_id)


@webhooks.command()
@click.option("--days", type=float, default=None,
              help="Age in days (default: ckanext.webhooks."
                   "delivery_retention_days).")
def prune(days):
    """Delete finished delivery records older than the retention period."""
    from ckanext.webhooks.pipeline import sweep as sweeping
    click.echo("Pruned {} deliveries".format(sweeping.prune(days)))
