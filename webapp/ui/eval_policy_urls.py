"""Page routes: eval_policy (issue 15/16 work; owned by one helper)."""

urlpatterns: list = []
