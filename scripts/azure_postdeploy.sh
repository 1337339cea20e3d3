#!/usr/bin/env sh
# azd postdeploy hook: deploy infra/wiring.bicep (Event Grid subscriptions for BlobCreated and the
# Azure ML run events, the benchmark's function key). It needs the deployed code: the blob
# trigger's `blobs_extension` key exists only once the host has started with the blob extension.
# Re-running it is harmless (every resource is created or updated in place).
set -eu
: "${AZURE_RESOURCE_GROUP:?run through azd (azd up / azd deploy)}"
: "${AZURE_FUNCTION_APP_NAME:?}" "${AZURE_FUNCTION_APP_URL:?}"
: "${BANKML_STORAGE_SYSTEM_TOPIC:?}" "${BANKML_ML_SYSTEM_TOPIC:?}" "${BANKML_RELAY_KEY:?}"

# Start the host (an anonymous route), so that its extension keys exist.
for _ in 1 2 3 4 5 6; do
  if curl -fsS -o /dev/null --max-time 60 "$AZURE_FUNCTION_APP_URL/api/swagger.json"; then break; fi
  sleep 10
done

# The key goes through a private parameters file, not the command line (visible in `ps`).
params=$(mktemp)
trap 'rm -f "$params"' EXIT
chmod 600 "$params"
cat >"$params" <<JSON
{"\$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
 "contentVersion": "1.0.0.0",
 "parameters": {
   "functionAppName": {"value": "$AZURE_FUNCTION_APP_NAME"},
   "storageTopicName": {"value": "$BANKML_STORAGE_SYSTEM_TOPIC"},
   "mlTopicName": {"value": "$BANKML_ML_SYSTEM_TOPIC"},
   "relayKey": {"value": "$BANKML_RELAY_KEY"}}}
JSON

attempt=1
until az deployment group create --resource-group "$AZURE_RESOURCE_GROUP" --name bankml-wiring \
    --template-file infra/wiring.bicep --parameters "@$params" --output none; do
  if [ "$attempt" -ge 3 ]; then
    echo "wiring failed 3 times; re-run: sh scripts/azure_postdeploy.sh (with the azd env exported)" >&2
    exit 1
  fi
  attempt=$((attempt + 1))
  echo "the host's keys may not exist yet; retrying in 30 s"
  sleep 30
done
echo "Event Grid subscriptions and the benchmark key are in place"
