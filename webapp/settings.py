"""One settings module, driven by the environment.

With DATABASE_URL and CELERY_BROKER_URL unset, orlab runs on the embedded default: SQLite under
var/ and kombu's filesystem broker, so `make demo` works on a bare laptop. Set them to use
PostgreSQL and Redis (what the tests and production use).
"""

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    import os

    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = env_str(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), got {raw!r}")


def env_float(name: str, default: float) -> float:
    raw = env_str(name, "")
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None


VAR_DIR = Path(env_str("ORLAB_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY") or ("insecure-dev-key-" + "orlab" * 8)
if not DEBUG and not env_str("SECRET_KEY") and env_bool("ORLAB_REQUIRE_SECRET_KEY", False):
    raise ImproperlyConfigured("SECRET_KEY must be set in production")
ALLOWED_HOSTS = [h for h in env_str("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver").split(",") if h]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's assets, served from /static/ (no CDN): /api-docs/
    "webapp.projects",
    "webapp.datasets",
    "webapp.runs",
    "webapp.fleet",
    "webapp.outbox",
    "webapp.alerts",
    "webapp.notify",
    "webapp.api",
    "webapp.mlflow_api",
    "webapp.ui",
]

MIDDLEWARE = [
    "webapp.middleware.ServerTimingMiddleware",
    "webapp.middleware.RejectNulMiddleware",
    "webapp.middleware.SingleApiQueryValuesMiddleware",
    "webapp.compression.CompressMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "webapp.ui.middleware.LoginRequiredMiddleware",
]

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

_database_url = env_str("DATABASE_URL")
if _database_url:
    DATABASES = {"default": dj_database_url.parse(_database_url, conn_max_age=60)}
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "orlab.sqlite3",
            # The worker and the web server write concurrently: WAL, a generous lock timeout, and
            # BEGIN IMMEDIATE so a transaction that reads then writes waits for the lock instead of
            # failing with SQLITE_BUSY when another writer got in between.
            "OPTIONS": {
                "timeout": env_float("ORLAB_SQLITE_TIMEOUT", 30.0),
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    DATABASES["default"].setdefault("TEST", {"NAME": env_str("ORLAB_TEST_DB", "test_orlab")})
# A persistent connection the server dropped (a database restart) is checked and replaced when a
# request starts, instead of failing that request with a 500.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on every start without it
# A metric batch may hold 100,000 points (~6 MB of JSON); everything else is far smaller.
DATA_UPLOAD_MAX_MEMORY_SIZE = 32 * 1024 * 1024
STATICFILES_DIRS = [BASE_DIR / "webapp" / "ui" / "static"]
# plotly.js comes from the plotly package itself, never from a CDN: webapp.ui.finders serves that one file.
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "webapp.ui.finders.PlotlyFinder",
]
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "webapp.api.pagination.PageNumberPagination",
    # JSON bodies with the API's limits (big integers, NUL, surrogates, depth): webapp/api/json_safety.py;
    # forms that refuse a body which is not a form: webapp/api/parsers.py
    "DEFAULT_PARSER_CLASSES": [
        "webapp.api.json_safety.SafeJSONParser",
        "webapp.api.parsers.FormParser",
        "webapp.api.parsers.MultiPartParser",
    ],
    "DEFAULT_RENDERER_CLASSES": [
        "webapp.api.renderers.ORJSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "webapp.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    # one name per enum that shares a field name with others ("kind"), instead of a hashed fallback
    "ENUM_NAME_OVERRIDES": {
        "ChannelKindEnum": "webapp.notify.models.Channel.Kind",
        "AlertRuleKindEnum": "webapp.alerts.models.Rule.Kind",
    },
    "TITLE": "orlab API",
    "DESCRIPTION": "Runs, metrics, checkpoints, datasets and evaluations of RL experiments on reasoning LMs.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "webapp.api.schema.add_error_responses",  # 400/404/409 on every operation
    ],
}

# --- Celery -------------------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL")
if not CELERY_BROKER_URL:
    # Embedded default: kombu's filesystem transport needs no server; the worker and the web
    # process exchange messages through files under var/broker.
    _broker_dir = VAR_DIR / "broker"
    for sub in ("queue", "processed", "control"):
        (_broker_dir / sub).mkdir(parents=True, exist_ok=True)
    # workers/fs_transport.py: kombu's filesystem transport with a FIFO order that survives the
    # uptime counter gaining a digit (the stock one lets new tasks jump ahead of old ones then).
    from kombu.transport import TRANSPORT_ALIASES

    TRANSPORT_ALIASES.setdefault("orlabfs", "workers.fs_transport:Transport")
    CELERY_BROKER_URL = "orlabfs://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
else:
    # Tasks ack late (below), so Redis restores a message a worker took and did not ack after this
    # long: a long run's message comes back every hour and is dropped (its run is claimed), a dead
    # worker's reservation comes back at the latest then (the outbox re-sends it sooner).
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_float("ORLAB_VISIBILITY_TIMEOUT", 3600.0)}
CELERY_TASK_IGNORE_RESULT = True
# Acked when the task returns: a message a dying worker had taken is delivered again, and the task
# drops it when its object is already claimed (live heartbeat) or ended. A pool child killed mid-task
# (OOM) is not re-queued (reject_on_worker_lost off): a message that kills its worker would loop; the
# housekeeping fails that object from its stale heartbeat instead.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "cpu"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Queues (README "Queues and the run lifecycle"): control (housekeeping, its own one-slot worker),
# short (tabular runs, curation, scoring, imports), cpu and gpu (training), eval (evaluations).
ORLAB_QUEUES = ("control", "short", "cpu", "gpu", "eval")
# the queues a run may be launched onto (control and eval carry housekeeping and evaluations only)
ORLAB_RUN_QUEUES = ("short", "cpu", "gpu")
CELERY_BEAT_SCHEDULE = {
    # lost runs, dead jobs, orphaned waiting runs, unsent and gone outbox messages
    "housekeeping": {
        "task": "workers.tasks.housekeeping",
        "schedule": env_float("ORLAB_HOUSEKEEPING_INTERVAL", 5.0),
        "options": {"queue": "control", "expires": 60},
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- orlab --------------------------------------------------------------------------------------
# Where workers write checkpoints; every worker and the web app must reach the same path.
ORLAB_ARTIFACTS = Path(env_str("ORLAB_ARTIFACTS", str(VAR_DIR / "artifacts")))
# An external run's uploaded checkpoint (a tar body, webapp/runs/checkpoint_upload.py): the largest
# body and unpacked total accepted (413 beyond). Default 20 GiB: a 7B model in bf16 with its tokenizer.
ORLAB_CHECKPOINT_UPLOAD_MAX_BYTES = int(env_float("ORLAB_CHECKPOINT_UPLOAD_MAX_BYTES", 20 * 2**30))
# A running run whose heartbeat is older than this is marked lost.
ORLAB_HEARTBEAT_TIMEOUT = env_float("ORLAB_HEARTBEAT_TIMEOUT", 45.0)
ORLAB_HEARTBEAT_INTERVAL = env_float("ORLAB_HEARTBEAT_INTERVAL", 2.0)
# Outbox (webapp/outbox): a sent message whose object is still unclaimed after this long is looked
# for in the broker and re-sent if it is provably gone.
ORLAB_OUTBOX_RESEND_AFTER = env_float("ORLAB_OUTBOX_RESEND_AFTER", 60.0)
# settled outbox messages are kept this long (for debugging a delivery), then pruned by the housekeeping
ORLAB_OUTBOX_KEEP_DAYS = env_float("ORLAB_OUTBOX_KEEP_DAYS", 7.0)
# A dataset `importing` with no worker message (imported inside a request) fails after this long.
ORLAB_IMPORT_STALE_AFTER = env_float("ORLAB_IMPORT_STALE_AFTER", 3600.0)
# Multi-node runs (workers/launch.py): how long node tasks wait for all nodes to join the c10d
# rendezvous before the run fails, and the address other hosts reach this one at (default: host name).
ORLAB_NODE_JOIN_TIMEOUT = env_float("ORLAB_NODE_JOIN_TIMEOUT", 600.0)
# Worker registry (webapp/fleet): each worker's main process reports this often (seconds); a report
# older than ORLAB_WORKER_STALE_AFTER is stale and launches are not validated against it. The model
# roots themselves (ORLAB_MODEL_ROOTS) are read by the workers from their own environment.
ORLAB_WORKER_REPORT_INTERVAL = env_float("ORLAB_WORKER_REPORT_INTERVAL", 10.0)
ORLAB_WORKER_STALE_AFTER = env_float("ORLAB_WORKER_STALE_AFTER", 60.0)
# The worker sink flushes buffered metrics at least this often (seconds): the live-chart latency.
ORLAB_SINK_FLUSH_INTERVAL = env_float("ORLAB_SINK_FLUSH_INTERVAL", 0.5)

# Entropy-collapse warning (webapp/runs/collapse.py has the rule). The tabular trainer's "entropy"
# rightly goes to zero as it converges, so it is not among the keys watched.
ORLAB_ENTROPY_KEYS = ["policy/entropy", "actor/entropy"]
ORLAB_COLLAPSE_RATIO = env_float("ORLAB_COLLAPSE_RATIO", 0.1)
ORLAB_COLLAPSE_FLOOR = env_float("ORLAB_COLLAPSE_FLOOR", 0.05)
ORLAB_COLLAPSE_WINDOW = env_float("ORLAB_COLLAPSE_WINDOW", 0.2)

# Notifications (webapp/notify, README "Notifications"). E-mail goes through Django's mail backend,
# configured from the environment (Django's own names); the default backend is SMTP on localhost:25.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = int(env_float("EMAIL_PORT", 25))
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = env_float("EMAIL_TIMEOUT", 10.0)  # seconds per SMTP operation: a dead server fails fast
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "orlab@localhost")
# Webhooks may post to private, loopback and link-local addresses only when the operator allows it
# (a webhook is otherwise a way to make the server reach its own network: SSRF). Tests and demo: 1.
ORLAB_WEBHOOK_ALLOW_PRIVATE = env_bool("ORLAB_WEBHOOK_ALLOW_PRIVATE", False)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "WARNING")},
}
