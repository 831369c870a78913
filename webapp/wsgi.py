import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
application = get_wsgi_application()

# Everything loaded so far lives as long as the process: move it out of the garbage collector's
# view, so a full collection no longer walks it (it was adding 80-100 ms to every 4th-5th request of
# the 1,000-run list; bench/RESULTS.md).
import gc  # noqa: E402

gc.collect()
gc.freeze()
