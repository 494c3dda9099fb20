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
    """Deliver webhooks: events, retries and pings, found in PostgreSQL.

    Runs until SIGTERM or Ctrl-C (a second one exits at once); tidies up
    every ckanext.webhooks.sweep_interval seconds. Exits non-zero if its
    delivery engine fails, for a supervisor to start it again.
    """
    from ckanext.webhooks.worker import run_worker
    code = run_worker(burst=burst)
    if code:
        raise SystemExit(code)


@webhooks.command()
def sweep():
    """Tidy up now: unverified and failing hooks, old records."""
    from ckanext.webhooks.pipeline import sweep as sweeping
    counts = sweeping.sweep()
    click.echo(json.dumps(counts))


@webhooks.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--stuck-after", type=float, default=None,
              help="Seconds a due message or an event may wait before "
                   "delivery counts as stuck (default 120).")
def status(as_json: bool, stuck_after):
    """How delivery is doing; exits 1 when it is stuck (a health check),
    2 when the webhooks tables are missing or outdated."""
    from ckanext.webhooks import status as health
    report = health.delivery_status(
        health.STUCK_AFTER if stuck_after is None else stuck_after)
    click.echo(json.dumps(report, indent=2) if as_json
               else health.as_text(report))
    if report["schema"] != "ready":
        raise SystemExit(2)
    if report["stuck"]:
        raise SystemExit(1)


# Hook ids are URL-safe and older ones may start with "-": such an argument
# is taken as the id, not as an unknown option (``--`` before it works too).
ID_ARGUMENTS = {"ignore_unknown_options": True}


def _sysadmin_context():
    site_user = tk.get_action("get_site_user")({"ignore_auth": True}, {})
    return {"user": site_user["name"], "ignore_auth": True}


def _act(action: str, data: dict):
    """Call an action as the site user; a refusal ends the command."""
    try:
        return tk.get_action(action)(_sysadmin_context(), data)
    except tk.ObjectNotFound as e:
        raise click.ClickException(str(e) or "Not found") from None
    except tk.ValidationError as e:
        raise click.ClickException("; ".join(
            "{}: {}".format(field, " ".join(map(str, messages))
                            if isinstance(messages, list) else messages)
            for field, messages in e.error_dict.items())) from None


@webhooks.command(name="list")
@click.option("--limit", default=100, show_default=True)
@click.option("--offset", default=0, show_default=True)
def list_hooks(limit: int, offset: int):
    """List all hooks (id, status, topics, address)."""
    hooks = tk.get_action("webhook_list")(
        _sysadmin_context(), {"limit": limit, "offset": offset})
    for hook in hooks:
        click.echo("{id}  {status:8}  {topics:16}  {address}".format(
            **dict(hook, topics=",".join(hook["topics"]))))
    if not hooks:
        click.echo("No hooks.")


@webhooks.command(context_settings=ID_ARGUMENTS)
@click.argument("hook_id")
def show(hook_id: str):
    """Show one hook as JSON."""
    hook = _act("webhook_show", {"id": hook_id})
    click.echo(json.dumps(hook, indent=2))


@webhooks.command(context_settings=ID_ARGUMENTS)
@click.argument("hook_id")
def delete(hook_id: str):
    """Delete one hook and its delivery log."""
    _act("webhook_delete", {"id": hook_id})
    click.echo("Deleted " + hook_id)


@webhooks.command(context_settings=ID_ARGUMENTS)
@click.argument("hook_id")
@click.option("--limit", default=20, show_default=True)
def deliveries(hook_id: str, limit: int):
    """List a hook's recent deliveries, newest first."""
    rows = _act("webhook_delivery_list", {"id": hook_id, "limit": limit})
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
    _act("webhook_redeliver", {"id": hook_id, "delivery_id": message_id})
    click.echo("Queued " + message_id)


@webhooks.command(context_settings=ID_ARGUMENTS)
@click.argument("hook_id")
@click.option("--address", help="A new callback address.")
@click.option("--topic", "topics", multiple=True,
              help="The hook's topics from now on (repeat for several).")
@click.option("--dataset", help='Dataset filter (id or name; "" removes it).')
@click.option("--organization",
              help='Organization filter (id or name; "" removes it).')
@click.option("--group", help='Group filter (id or name; "" removes it).')
@click.option("--resource", help='Resource filter (id; "" removes it).')
@click.option("--description", help='What it is for ("" removes it).')
def update(hook_id: str, topics: tuple, **changes):
    """Change a hook: address, topics, filters, description."""
    data = {name: value for name, value in changes.items()
            if value is not None}
    if topics:
        data["topics"] = list(topics)
    hook = _act("webhook_update", dict(data, id=hook_id))
    click.echo(json.dumps(hook, indent=2))


@webhooks.command(context_settings=ID_ARGUMENTS)
@click.argument("hook_id")
def disable(hook_id: str):
    """Pause a hook: no events, pings or challenges until enabled."""
    hook = _act("webhook_update", {"id": hook_id, "enabled": False})
    click.echo("{id} is {status}".format(**hook))


@webhooks.command(context_settings=ID_ARGUMENTS)
@click.argument("hook_id")
def enable(hook_id: str):
    """Resume a disabled hook (pending if it was never verified)."""
    hook = _act("webhook_update", {"id": hook_id, "enabled": True})
    click.echo("{id} is {status}".format(**hook))


@webhooks.command(context_settings=ID_ARGUMENTS)
@click.argument("hook_id")
@click.option("--since", required=True,
              help="ISO 8601 time, e.g. 2026-11-29T22:00:00Z.")
def recover(hook_id: str, since: str):
    """Deliver a hook's failed deliveries since a time again."""
    count = _act("webhook_recover", {"id": hook_id, "since": since})
    click.echo("Delivering {} failed deliveries again".format(count))


@webhooks.command()
@click.option("--days", type=float, default=None,
              help="Age in days (default: ckanext.webhooks."
                   "delivery_retention_days).")
def prune(days):
    """Delete finished delivery records older than the retention period."""
    from ckanext.webhooks.pipeline import sweep as sweeping
    click.echo("Pruned {} deliveries".format(sweeping.prune(days)))
