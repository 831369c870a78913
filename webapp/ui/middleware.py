from django.conf import settings
from django.contrib.auth.views import redirect_to_login

# Paths a visitor without a session may reach. The API authenticates itself (token or session)
# and answers 401 rather than redirecting to a login page.
# /mlflow/ (webapp/mlflow_api) takes only token or basic auth and answers MLflow's 401 itself.
PUBLIC_PREFIXES = ("/login/", "/static/", "/api/", "/healthz", "/mlflow/")


class LoginRequiredMiddleware:
    """Every page needs a login: denying by default means a new view cannot forget it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.user.is_authenticated and not request.path.startswith(PUBLIC_PREFIXES):
            return redirect_to_login(request.get_full_path(), settings.LOGIN_URL)
        return self.get_response(request)
