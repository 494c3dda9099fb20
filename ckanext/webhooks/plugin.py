"""Plugin ``webhooks``: wiring only; each concern lives in its own module."""
import ckan.plugins as p
import ckan.plugins.toolkit as tk
from ckan.lib.plugins import DefaultTranslation

from ckanext.webhooks import response_headers, subscriptions, tables
from ckanext.webhooks.logic import validators

# the extension's options, validated by the validators of
# config_declaration.yaml
OPTION_PREFIX = "ckanext.webhooks."
RETRY_SCHEDULE = OPTION_PREFIX + "retry_schedule"


def check_config(config) -> None:
    """Refuse to start with a bad value of one of the extension's options,
    naming the option (CKAN 2.11 and later do so for every option by
    themselves; CKAN 2.10 only logs, unless ``config.mode = strict``)."""
    from ckan.common import config_declaration
    from ckan.exceptions import CkanConfigurationException
    _, errors = config_declaration.validate(config)
    ours = {str(key): issues for key, issues in errors.items()
            if str(key).startswith(OPTION_PREFIX)}
    # checked here, not by a validator named in the declaration: CKAN 2.12
    # validates the declaration before it knows the validators of plugins
    try:
        validators.webhooks_retry_schedule(
            config.get(RETRY_SCHEDULE), {})
    except tk.Invalid as e:
        ours[RETRY_SCHEDULE] = [e.error]
    if ours:
        raise CkanConfigurationException(
            "Invalid configuration values provided:\n" + "\n".join(
                "{0}: {1}".format(key, "; ".join(map(str, issues)))
                for key, issues in sorted(ours.items())))


@tk.blanket.actions
@tk.blanket.auth_functions
@tk.blanket.blueprints
@tk.blanket.cli
@tk.blanket.config_declarations
@tk.blanket.helpers
class WebhooksPlugin(DefaultTranslation, p.SingletonPlugin):
    p.implements(p.ITranslation)
    p.implements(p.IConfigurer)
    p.implements(p.IConfigurable)
    p.implements(p.IMiddleware, inherit=True)

    # IConfigurer

    def update_config(self, config):
        tk.add_template_directory(config, "templates")
        tk.add_public_directory(config, "public")

    # IConfigurable

    def configure(self, config):
        check_config(config)
        subscriptions.listen()
        tables.check_at_start_up()

    # IMiddleware

    def make_middleware(self, app, config):
        return response_headers.install(app)
