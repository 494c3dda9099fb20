"""Plugin ``webhooks``: wiring only; each concern lives in its own module."""
import ckan.plugins as p
import ckan.plugins.toolkit as tk
from ckan.lib.plugins import DefaultTranslation

from ckanext.webhooks import response_headers, subscriptions, tables


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
        subscriptions.listen()
        tables.check_at_start_up()

    # IMiddleware

    def make_middleware(self, app, config):
        return response_headers.install(app)
