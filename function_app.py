"""The function app: creates the app and registers the blueprints, nothing else."""

import azure.functions as func

from functions.benchmark import bp as benchmark_bp
from functions.deploy import bp as deploy_bp
from functions.ingest import bp as ingest_bp
from functions.insights import bp as insights_bp
from functions.pipeline import bp as pipeline_bp
from functions.relay import bp as relay_bp
from functions.retrain import bp as retrain_bp

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (ingest_bp, deploy_bp, insights_bp, relay_bp, benchmark_bp, pipeline_bp, retrain_bp):
    app.register_functions(blueprint)
