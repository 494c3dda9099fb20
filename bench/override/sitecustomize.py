"""Measure another copy of the code: ``bench/run --code DIR``.

``ckanext`` is a namespace package that the editable install of
/work/main and CKAN's own .pth file set up before PYTHONPATH is looked at, so
putting a copy first on PYTHONPATH is not enough: this puts DIR/ckanext first
in ``ckanext.__path__``, in the benchmark process and in every worker it
starts (they inherit PYTHONPATH and WEBHOOKS_BENCH_CODE).
"""
import os

_code = os.environ.get("WEBHOOKS_BENCH_CODE")
if _code:
    try:
        import ckanext
    except ImportError:  # not this venv
        ckanext = None
    _path = os.path.join(os.path.abspath(_code), "ckanext")
    try:
        ckanext.__path__.insert(0, _path)
    except AttributeError:  # a _NamespacePath
        ckanext.__path__ = [_path] + list(ckanext.__path__)
