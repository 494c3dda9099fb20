"""Call CKAN actions in a CKAN process of its own, for tests whose CKAN runs
against another database (a private PostgreSQL cluster).

    python action_runner.py CKAN_INI < lines of "ACTION JSON"

prints one JSON line per action: ``{"result": ..., "at": <unix time after
it returned (committed)>}``. There is no Solr: CKAN's search index is a
no-op here, as in conftest.py.
"""
import json
import sys
import time

from ckan.cli import load_config
from ckan.config.middleware import make_app
from ckan.lib.search import index

import ckan.plugins.toolkit as tk


def main(ini: str) -> None:
    app = make_app(load_config(ini))
    for name in ("index_package", "update_dict", "remove_dict",
                 "insert_dict", "delete_package", "commit"):
        setattr(index.PackageSearchIndex, name, lambda *a, **k: None)
    with app._wsgi_app.test_request_context():
        user = tk.get_action("get_site_user")({"ignore_auth": True}, {})
        for line in sys.stdin:
            action, data = line.split(" ", 1)
            result = tk.get_action(action)(
                {"user": user["name"], "ignore_auth": True}, json.loads(data))
            if isinstance(result, dict):
                result = result.get("id")
            print(json.dumps({"result": result, "at": time.time()}),
                  flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
