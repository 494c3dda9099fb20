"""The ``webhooks`` blueprint: HTML pages under /webhooks."""
from flask import Blueprint

webhooks = Blueprint("webhooks", __name__, url_prefix="/webhooks")
