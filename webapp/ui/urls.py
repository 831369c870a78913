from django.contrib.auth import views as auth_views
from django.urls import path

from webapp.ui import views

urlpatterns = [
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="registration/login.html", redirect_authenticated_user=True
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.project_index, name="projects"),
    path("projects/<int:pk>/", views.project_runs, name="project"),
    path("projects/<int:pk>/launch/", views.launch, name="launch"),
    path("runs/<int:pk>/", views.run_detail, name="run"),
    path("runs/<int:pk>/cancel/", views.run_cancel, name="run-cancel"),
    path("runs/<int:pk>/resume/", views.run_resume, name="run-resume"),
    path("runs/<int:pk>/clone/", views.run_clone, name="run-clone"),
    path("compare/", views.compare, name="compare"),
]
