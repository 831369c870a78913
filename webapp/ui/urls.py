from django.contrib.auth import views as auth_views
from django.urls import path

import webapp.ui.dataset_views as dataset_views
import webapp.ui.step_values_views as step_values_views
from webapp.ui import (
    compare_views,
    curate_views,
    launch_views,
    pair_views,
    project_views,
    run_panels,
    run_views,
    runs_views,
    token_views,
)
from webapp.ui.prompt_urls import urlpatterns as prompt_urls
from webapp.ui.sample_urls import urlpatterns as sample_urls

urlpatterns = [
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="registration/login.html", redirect_authenticated_user=True
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", project_views.project_index, name="projects"),
    path("projects/<int:pk>/", runs_views.project_runs, name="project"),
    path("projects/<int:pk>/launch/", launch_views.launch, name="launch"),
    path("runs/<int:pk>/", run_views.run_detail, name="run"),
    path("runs/<int:pk>/cancel/", run_views.run_cancel, name="run-cancel"),
    path("runs/<int:pk>/resume/", run_views.run_resume, name="run-resume"),
    path("runs/<int:pk>/clone/", run_views.run_clone, name="run-clone"),
    path("runs/<int:pk>/checkpoints/<int:checkpoint_pk>/score/", run_panels.run_score, name="run-score"),
    path("compare/", compare_views.compare, name="compare"),
    path("settings/token/", token_views.api_token, name="api-token"),
    path("projects/<int:pk>/datasets/", dataset_views.dataset_list, name="datasets"),
    path("datasets/<int:pk>/", dataset_views.dataset_detail, name="dataset"),
    path("datasets/<int:pk>/pairs/", pair_views.pair_browser, name="dataset-pairs"),
    path("datasets/<int:pk>/pairs/<int:row>/", pair_views.pair_detail, name="dataset-pair"),
    path("datasets/<int:pk>/curate/", curate_views.curate, name="dataset-curate"),
    path("datasets/<int:pk>/solutions/", step_values_views.step_solutions, name="dataset-solutions"),
]
urlpatterns += sample_urls
urlpatterns += prompt_urls

from webapp.ui.alert_urls import urlpatterns as alert_urls  # noqa: E402
from webapp.ui.chart_prefs_urls import urlpatterns as chart_prefs_urls  # noqa: E402
from webapp.ui.checkpoint_download_urls import urlpatterns as checkpoint_download_urls  # noqa: E402
from webapp.ui.eval_policy_urls import urlpatterns as eval_policy_urls  # noqa: E402
from webapp.ui.notify_urls import urlpatterns as notify_urls  # noqa: E402
from webapp.ui.queue_urls import urlpatterns as queue_urls  # noqa: E402

urlpatterns += alert_urls
urlpatterns += notify_urls
urlpatterns += queue_urls
urlpatterns += eval_policy_urls
urlpatterns += checkpoint_download_urls
urlpatterns += chart_prefs_urls
