"""An MLflow-compatible tracking API under /mlflow (issue 13, point 1): the stock mlflow client logs
into orlab with MLFLOW_TRACKING_URI=http://HOST:PORT/mlflow and MLFLOW_TRACKING_TOKEN=<orlab API token>.

Mapping: experiment = orlab project, run = orlab run (external kind for runs created here), metrics
go through webapp.runs.metric_store; MLflow's own run state (params as sent, key/value tags, deletion,
logged inputs) lives in MlflowRun next to the run."""
