#!/usr/bin/env sh
# azd preprovision hook: the benchmark's function key (BANKML_RELAY_KEY) is generated once per azd
# environment and kept in .azure/<env>/.env (git-ignored); main.bicep sets it as an app setting
# and infra/wiring.bicep registers it as a host function key. It is never printed.
set -eu
if [ -z "${BANKML_RELAY_KEY:-}" ]; then
  key=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
  azd env set BANKML_RELAY_KEY "$key" >/dev/null
  echo "generated BANKML_RELAY_KEY for this azd environment"
fi
