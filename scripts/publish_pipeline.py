"""One-time publication of the AutoML training pipeline in an Azure ML workspace (azure-ai-ml).

Creates (or updates), idempotently:
  1. a CPU compute cluster that scales to zero;
  2. the training pipeline as a pipeline component: one AutoML classification node on the
     ``training_data`` MLTable input, label ``y``, primary metric AUC_weighted on a 20 % validation
     split (the held-out metric the deployment gate reads);
  3. a batch endpoint with that component as its default deployment - SDK v2's equivalent of a
     published pipeline; the app invokes it for every new dataset version (BANKML_AZURE_TRIGGER=batch);
  4. the managed online endpoint (key auth) that the app deploys models to. Created here, by you,
     because creating an endpoint with a system-assigned identity needs the right to assign roles,
     which the function app's identity does not have.

Settings come from the azd environment (``azd env get-values``) or the command line; nothing
secret is read or printed. ``--dry-run`` builds and validates the pipeline without Azure.

    set -a; eval "$(azd env get-values)"; set +a
    .venv/bin/python scripts/publish_pipeline.py
"""

# No `from __future__ import annotations`: dsl.pipeline reads the Input annotation at run time.
import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("publish_pipeline")

DEPLOYMENT_NAME = "automl"
LABEL = "y"
PRIMARY_METRIC = "AUC_weighted"


def build_training_pipeline(*, compute: str, timeout_minutes: int, max_trials: int) -> Any:
    """The training pipeline (a PipelineComponent): AutoML classification on ``training_data``."""
    from azure.ai.ml import Input, automl, dsl
    from azure.ai.ml.constants import AssetTypes

    @dsl.pipeline(
        name="bankml_training",
        description="bankml: AutoML classification of the Bank Marketing data (label y, AUC_weighted)",
        default_compute=compute,
    )
    def bankml_training(training_data: Input(type=AssetTypes.MLTABLE)) -> None:  # type: ignore[valid-type]
        node = automl.classification(
            training_data=training_data,
            target_column_name=LABEL,
            primary_metric=PRIMARY_METRIC,
            validation_data_size=0.2,
            enable_model_explainability=False,
        )
        # AutoML needs at least 15 minutes; early termination ends a search that stopped improving.
        node.set_limits(timeout_minutes=max(15, timeout_minutes), max_trials=max_trials, enable_early_termination=True)

    # The path only shapes the input while building; each invocation passes its own data asset.
    job = bankml_training(training_data=Input(type=AssetTypes.MLTABLE, path="azureml:bankmarketing:1"))
    component = job.component
    result = component._validate()
    if not result.passed:
        raise SystemExit(f"the training pipeline does not validate: {result.error_messages}")
    return component


def _arg_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subscription", default=env("AZURE_SUBSCRIPTION_ID"))
    p.add_argument("--resource-group", default=env("AZURE_RESOURCE_GROUP"))
    p.add_argument("--workspace", default=env("AZURE_ML_WORKSPACE"))
    p.add_argument("--batch-endpoint", default=env("BANKML_AZURE_BATCH_ENDPOINT"))
    p.add_argument("--online-endpoint", default=env("BANKML_AZURE_ONLINE_ENDPOINT"))
    p.add_argument("--compute", default="bankml-cpu", help="compute cluster name (default bankml-cpu)")
    p.add_argument("--vm-size", default="Standard_DS3_v2")
    p.add_argument("--max-nodes", type=int, default=2)
    p.add_argument("--timeout-minutes", type=int, default=20, help="AutoML experiment timeout (at least 15)")
    p.add_argument("--max-trials", type=int, default=20)
    p.add_argument("--dry-run", action="store_true", help="build and validate the pipeline only; no Azure calls")
    return p


def publish(args: argparse.Namespace) -> dict[str, str]:
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import AmlCompute, BatchEndpoint, ManagedOnlineEndpoint, PipelineComponentBatchDeployment
    from azure.core.exceptions import ResourceNotFoundError
    from azure.identity import DefaultAzureCredential

    ml = MLClient(DefaultAzureCredential(), args.subscription, args.resource_group, args.workspace)

    log.info("compute cluster %s (%s, 0..%d nodes)", args.compute, args.vm_size, args.max_nodes)
    ml.compute.begin_create_or_update(
        AmlCompute(name=args.compute, size=args.vm_size, min_instances=0, max_instances=args.max_nodes, idle_time_before_scale_down=300)
    ).result()

    component = ml.components.create_or_update(
        build_training_pipeline(compute=args.compute, timeout_minutes=args.timeout_minutes, max_trials=args.max_trials)
    )
    log.info("pipeline component %s:%s", component.name, component.version)

    log.info("batch endpoint %s", args.batch_endpoint)
    ml.batch_endpoints.begin_create_or_update(
        BatchEndpoint(name=args.batch_endpoint, description="bankml: starts the AutoML training pipeline")
    ).result()
    deployment = PipelineComponentBatchDeployment(
        name=DEPLOYMENT_NAME,
        endpoint_name=args.batch_endpoint,
        component=component,
        settings={"continue_on_step_failure": False, "default_compute": args.compute},
    )
    ml.batch_deployments.begin_create_or_update(deployment).result()
    endpoint = ml.batch_endpoints.get(args.batch_endpoint)
    endpoint.defaults.deployment_name = DEPLOYMENT_NAME
    ml.batch_endpoints.begin_create_or_update(endpoint).result()

    try:
        ml.online_endpoints.get(args.online_endpoint)
        log.info("online endpoint %s exists", args.online_endpoint)
    except ResourceNotFoundError:
        log.info("online endpoint %s (key auth; deployments come from the app)", args.online_endpoint)
        ml.online_endpoints.begin_create_or_update(
            ManagedOnlineEndpoint(name=args.online_endpoint, auth_mode="key", description="bankml: the live Bank Marketing model")
        ).result()
    return {
        "component": f"{component.name}:{component.version}",
        "batch_endpoint": args.batch_endpoint,
        "batch_deployment": DEPLOYMENT_NAME,
        "online_endpoint": args.online_endpoint,
    }


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = _arg_parser().parse_args(argv)
    if args.dry_run:
        component = build_training_pipeline(compute=args.compute, timeout_minutes=args.timeout_minutes, max_trials=args.max_trials)
        print(f"pipeline component {component.name}: inputs {sorted(component.inputs)}, nodes {sorted(component.jobs)} (valid)")
        return 0
    missing = [
        flag for flag, value in (
            ("--subscription / AZURE_SUBSCRIPTION_ID", args.subscription),
            ("--resource-group / AZURE_RESOURCE_GROUP", args.resource_group),
            ("--workspace / AZURE_ML_WORKSPACE", args.workspace),
            ("--batch-endpoint / BANKML_AZURE_BATCH_ENDPOINT", args.batch_endpoint),
            ("--online-endpoint / BANKML_AZURE_ONLINE_ENDPOINT", args.online_endpoint),
        ) if not value
    ]
    if missing:
        print("missing: " + ", ".join(missing) + " (run `azd env get-values` after `azd provision`)", file=sys.stderr)
        return 2
    for name, value in publish(args).items():
        print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
