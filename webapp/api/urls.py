from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from webapp.api import table_views as tv
from webapp.api import views as v
from webapp.api.compare_group_views import CompareGroupsApi
from webapp.api.curation_views import urlpatterns as curation_urls
from webapp.api.fleet_views import urlpatterns as fleet_urls
from webapp.api.project_resolve_views import urlpatterns as project_resolve_urls
from webapp.api.step_values_views import urlpatterns as step_values_urls

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("projects/", v.ProjectListApi.as_view(), name="api-projects"),
    path("projects/<int:pk>/", v.ProjectDetailApi.as_view(), name="api-project"),
    path("trainers/", v.TrainerListApi.as_view(), name="api-trainers"),
    path("runs/", v.RunListApi.as_view(), name="api-runs"),
    path("runs/sweep/", v.SweepCreateApi.as_view(), name="api-sweep"),
    path("runs/table/", tv.RunTableApi.as_view(), name="api-run-table"),
    path("runs/fields/", tv.RunFieldsApi.as_view(), name="api-run-fields"),
    path("views/", tv.SavedViewListApi.as_view(), name="api-views"),
    path("views/<int:pk>/", tv.SavedViewDetailApi.as_view(), name="api-view"),
    path("runs/<int:pk>/", v.RunDetailApi.as_view(), name="api-run"),
    path("runs/<int:pk>/cancel/", v.RunCancelApi.as_view(), name="api-run-cancel"),
    path("runs/<int:pk>/resume/", v.RunResumeApi.as_view(), name="api-run-resume"),
    path("runs/<int:pk>/clone/", v.RunCloneApi.as_view(), name="api-run-clone"),
    path("runs/<int:pk>/finish/", v.RunFinishApi.as_view(), name="api-run-finish"),
    path("runs/<int:pk>/metrics/", v.RunMetricsApi.as_view(), name="api-run-metrics"),
    path("runs/<int:pk>/samples/", v.RunSamplesApi.as_view(), name="api-run-samples"),
    path("runs/<int:pk>/checkpoints/", v.RunCheckpointsApi.as_view(), name="api-run-checkpoints"),
    path("runs/<int:pk>/evaluations/", v.RunEvaluationsApi.as_view(), name="api-run-evaluations"),
    path("runs/<int:pk>/scoring/", v.RunScoringJobsApi.as_view(), name="api-run-scoring"),
    path("compare/", v.CompareMetricsApi.as_view(), name="api-compare"),
    path("compare/evaluations/", tv.CompareEvaluationsApi.as_view(), name="api-compare-evaluations"),
    path("compare/series/", tv.CompareSeriesApi.as_view(), name="api-compare-series"),
    path("compare/groups/", CompareGroupsApi.as_view(), name="api-compare-groups"),
    path("datasets/", v.DatasetListApi.as_view(), name="api-datasets"),
    path("datasets/<int:pk>/", v.DatasetDetailApi.as_view(), name="api-dataset"),
    path("datasets/<int:pk>/pairs/", v.DatasetPairsApi.as_view(), name="api-dataset-pairs"),
    path("datasets/<int:pk>/problems/", v.DatasetProblemsApi.as_view(), name="api-dataset-problems"),
    path("datasets/<int:pk>/scoring/", v.DatasetScoringJobsApi.as_view(), name="api-dataset-scoring"),
    path("checkpoints/<int:pk>/evaluate/", v.CheckpointEvaluateApi.as_view(), name="api-checkpoint-evaluate"),
    path("checkpoints/<int:pk>/score/", v.CheckpointScoreApi.as_view(), name="api-checkpoint-score"),
]
urlpatterns += curation_urls
urlpatterns += fleet_urls
urlpatterns += project_resolve_urls
urlpatterns += step_values_urls
