from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from webapp.api import checkpoint_views as cv
from webapp.api import dataset_views as dv
from webapp.api import metric_views as mv
from webapp.api import project_views as pv
from webapp.api import run_views as rv
from webapp.api import table_views as tv
from webapp.api import trainer_views as trv
from webapp.api.compare_group_views import CompareGroupsApi
from webapp.api.curation_views import urlpatterns as curation_urls
from webapp.api.fleet_views import urlpatterns as fleet_urls
from webapp.api.project_resolve_views import urlpatterns as project_resolve_urls
from webapp.api.prompt_urls import urlpatterns as prompt_urls
from webapp.api.sample_urls import urlpatterns as sample_urls
from webapp.api.step_values_views import urlpatterns as step_values_urls

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("projects/", pv.ProjectListApi.as_view(), name="api-projects"),
    path("projects/<int:pk>/", pv.ProjectDetailApi.as_view(), name="api-project"),
    path("trainers/", trv.TrainerListApi.as_view(), name="api-trainers"),
    path("runs/", rv.RunListApi.as_view(), name="api-runs"),
    path("runs/sweep/", rv.SweepCreateApi.as_view(), name="api-sweep"),
    path("runs/table/", tv.RunTableApi.as_view(), name="api-run-table"),
    path("runs/fields/", tv.RunFieldsApi.as_view(), name="api-run-fields"),
    path("views/", tv.SavedViewListApi.as_view(), name="api-views"),
    path("views/<int:pk>/", tv.SavedViewDetailApi.as_view(), name="api-view"),
    path("runs/<int:pk>/", rv.RunDetailApi.as_view(), name="api-run"),
    path("runs/<int:pk>/cancel/", rv.RunCancelApi.as_view(), name="api-run-cancel"),
    path("runs/<int:pk>/resume/", rv.RunResumeApi.as_view(), name="api-run-resume"),
    path("runs/<int:pk>/clone/", rv.RunCloneApi.as_view(), name="api-run-clone"),
    path("runs/<int:pk>/finish/", rv.RunFinishApi.as_view(), name="api-run-finish"),
    path("runs/<int:pk>/metrics/", mv.RunMetricsApi.as_view(), name="api-run-metrics"),
    path("runs/<int:pk>/samples/", rv.RunSamplesApi.as_view(), name="api-run-samples"),
    path("runs/<int:pk>/checkpoints/", rv.RunCheckpointsApi.as_view(), name="api-run-checkpoints"),
    path("runs/<int:pk>/evaluations/", rv.RunEvaluationsApi.as_view(), name="api-run-evaluations"),
    path("runs/<int:pk>/scoring/", rv.RunScoringJobsApi.as_view(), name="api-run-scoring"),
    path("compare/", mv.CompareMetricsApi.as_view(), name="api-compare"),
    path("compare/evaluations/", tv.CompareEvaluationsApi.as_view(), name="api-compare-evaluations"),
    path("compare/series/", tv.CompareSeriesApi.as_view(), name="api-compare-series"),
    path("compare/groups/", CompareGroupsApi.as_view(), name="api-compare-groups"),
    path("datasets/", dv.DatasetListApi.as_view(), name="api-datasets"),
    path("datasets/<int:pk>/", dv.DatasetDetailApi.as_view(), name="api-dataset"),
    path("datasets/<int:pk>/pairs/", dv.DatasetPairsApi.as_view(), name="api-dataset-pairs"),
    path("datasets/<int:pk>/problems/", dv.DatasetProblemsApi.as_view(), name="api-dataset-problems"),
    path("datasets/<int:pk>/scoring/", dv.DatasetScoringJobsApi.as_view(), name="api-dataset-scoring"),
    path(
        "checkpoints/<int:pk>/evaluate/", cv.CheckpointEvaluateApi.as_view(), name="api-checkpoint-evaluate"
    ),
    path("checkpoints/<int:pk>/score/", cv.CheckpointScoreApi.as_view(), name="api-checkpoint-score"),
]
urlpatterns += curation_urls
urlpatterns += fleet_urls
urlpatterns += project_resolve_urls
urlpatterns += step_values_urls
urlpatterns += sample_urls
urlpatterns += prompt_urls

from webapp.api.alert_urls import urlpatterns as alert_urls  # noqa: E402
from webapp.api.chart_prefs_urls import urlpatterns as chart_prefs_urls  # noqa: E402
from webapp.api.checkpoint_download_urls import urlpatterns as checkpoint_download_urls  # noqa: E402
from webapp.api.eval_policy_urls import urlpatterns as eval_policy_urls  # noqa: E402
from webapp.api.notify_urls import urlpatterns as notify_urls  # noqa: E402
from webapp.api.queue_urls import urlpatterns as queue_urls  # noqa: E402

urlpatterns += alert_urls
urlpatterns += notify_urls
urlpatterns += queue_urls
urlpatterns += eval_policy_urls
urlpatterns += checkpoint_download_urls
urlpatterns += chart_prefs_urls
