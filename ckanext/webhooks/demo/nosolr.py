"""STAND-IN FOR SOLR, only for ``make demo DEMO_SOLR=none`` and
``WEBHOOKS_BENCH_SOLR=none bench/run``.

CKAN indexes every dataset write into Solr and fails the write when there is
none. This plugin (``webhooks_demo_nosolr``) makes indexing and search no-ops
so the demo can run without Solr; its search, organization and group pages
then list no datasets. The demo, the tests and the benchmarks run a real
Solr by default (scripts/solr.sh). Never enable it on a real portal: use the
operator's Solr there. ckanext-webhooks itself never touches search.
Organization and group pages, whose dataset lists stay empty, say why.
"""
import ckan.plugins as p
import ckan.plugins.toolkit as tk
from ckan.lib.search import index, query


def _nothing(*args, **kwargs):
    return None


def _no_results(self, *args, **kwargs):
    # package_search reads these attributes after run()
    self.count, self.results, self.facets = 0, [], {}
    return {"results": [], "count": 0, "facets": {}, "search_facets": {}}


class NoSolrPlugin(p.SingletonPlugin):
    p.implements(p.IConfigurable)
    p.implements(p.IConfigurer)

    def update_config(self, config):
        tk.add_template_directory(config, "templates")

    def configure(self, config):
        for name in ("index_package", "update_dict", "remove_dict",
                     "insert_dict", "delete_package", "commit", "clear"):
            setattr(index.PackageSearchIndex, name, _nothing)
        query.PackageSearchQuery.run = _no_results
        query.PackageSearchQuery.get_all_entity_ids = \
            lambda self, max_results=1000: []
