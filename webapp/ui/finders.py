"""Serves plotly.js from the installed plotly package as /static/vendor/plotly.min.js, so the
browser never needs a CDN and the JS always matches the installed plotly version."""

from pathlib import Path

import plotly
from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage

PLOTLY_DIR = Path(plotly.__file__).parent / "package_data"
SERVED = {"vendor/plotly.min.js": "plotly.min.js"}


class PlotlyFinder(BaseFinder):
    def __init__(self, *args, **kwargs):
        self.storage = FileSystemStorage(location=str(PLOTLY_DIR))
        self.storage.prefix = "vendor"

    def check(self, **kwargs):
        return []

    def find(self, path, find_all=False, **kwargs):
        name = SERVED.get(path)
        if name is None:
            return [] if find_all else None
        full = str(PLOTLY_DIR / name)
        return [full] if find_all else full

    def list(self, ignore_patterns):
        for name in SERVED.values():
            yield name, self.storage
