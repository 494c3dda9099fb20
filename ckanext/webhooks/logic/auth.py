"""Who may call the webhook actions.

Knowing a hook's id is the right to see and manage it, so every action that
takes an id is open to anyone; the action itself answers NotFound for ids it
does not know. Listing is for logged-in users (their own hooks) and
sysadmins (all).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import ckan.plugins.toolkit as tk

if TYPE_CHECKING:
    from ckan.types import AuthResult, Context, DataDict


def _logged_in(context: Context) -> bool:
    return bool(context.get("user")) and \
        context.get("auth_user_obj") is not None


@tk.auth_allow_anonymous_access
def webhook_create(context: Context, data_dict: DataDict) -> AuthResult:
    if tk.config.get("ckanext.webhooks.allow_anonymous") or \
            _logged_in(context):
        return {"success": True}
    return {"success": False,
            "msg": tk._("You must be logged in to create a webhook")}


@tk.auth_allow_anonymous_access
def webhook_show(context: Context, data_dict: DataDict) -> AuthResult:
    return {"success": True}


@tk.auth_allow_anonymous_access
def webhook_update(context: Context, data_dict: DataDict) -> AuthResult:
    return {"success": True}


@tk.auth_allow_anonymous_access
def webhook_delete(context: Context, data_dict: DataDict) -> AuthResult:
    return {"success": True}


@tk.auth_allow_anonymous_access
def webhook_ping(context: Context, data_dict: DataDict) -> AuthResult:
    return {"success": True}


@tk.auth_allow_anonymous_access
def webhook_delivery_list(context: Context, data_dict: DataDict) -> AuthResult:
    return {"success": True}


@tk.auth_allow_anonymous_access
def webhook_delivery_show(context: Context, data_dict: DataDict) -> AuthResult:
    return {"success": True}


@tk.auth_allow_anonymous_access
def webhook_redeliver(context: Context, data_dict: DataDict) -> AuthResult:
    return {"success": True}


@tk.auth_allow_anonymous_access
def webhook_recover(context: Context, data_dict: DataDict) -> AuthResult:
    return {"success": True}


@tk.auth_allow_anonymous_access
def webhook_rotate_secret(context: Context, data_dict: DataDict) -> AuthResult:
    return {"success": True}


def webhook_list(context: Context, data_dict: DataDict) -> AuthResult:
    if _logged_in(context):
        return {"success": True}
    return {"success": False,
            "msg": tk._("You must be logged in to list your webhooks")}
