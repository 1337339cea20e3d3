// bankml on Azure: everything `azd provision` creates, from an empty subscription.
// The event subscriptions and the benchmark's function key need the deployed code (the host's
// extension keys exist only once it runs): infra/wiring.bicep, deployed by the postdeploy hook.
targetScope = 'subscription'

@minLength(1)
@maxLength(40)
@description('azd environment name; it seeds every resource name')
param environmentName string

@minLength(1)
@description('Region of every resource (one that offers Flex Consumption and Azure ML)')
@metadata({ azd: { type: 'location' } })
param location string

@description('Object id of the person running azd: may upload CSVs to incoming/ (leave empty to skip)')
param principalId string = ''

@secure()
@description('Function key the benchmark timer sends to the relay (generated once by the preprovision hook)')
param relayKey string

@allowed(['batch', 'pipeline'])
@description('How training starts: the batch endpoint from scripts/publish_pipeline.py, or a v1 published pipeline URL')
param trainingTrigger string = 'batch'

@description('REST endpoint of a v1 published pipeline (trigger "pipeline" only)')
param publishedPipelineUrl string = ''

@description('VM size of each online deployment')
param instanceType string = 'Standard_DS3_v2'

param experimentName string = 'bankmarketing-automl'

var tags = { 'azd-env-name': environmentName, app: 'bankml' }

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-bankml-${environmentName}'
  location: location
  tags: tags
}

module app 'app.bicep' = {
  name: 'bankml-app'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: toLower(uniqueString(subscription().id, environmentName, location))
    principalId: principalId
    relayKey: relayKey
    trainingTrigger: trainingTrigger
    publishedPipelineUrl: publishedPipelineUrl
    instanceType: instanceType
    experimentName: experimentName
  }
}

// azd stores these in .azure/<env>/.env; the hooks and scripts/publish_pipeline.py read them.
output AZURE_LOCATION string = location
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.functionAppName
output AZURE_FUNCTION_APP_URL string = app.outputs.functionAppUrl
output AZURE_STORAGE_ACCOUNT_NAME string = app.outputs.storageAccountName
output AZURE_ML_WORKSPACE string = app.outputs.mlWorkspaceName
output BANKML_AZURE_BATCH_ENDPOINT string = app.outputs.batchEndpointName
output BANKML_AZURE_ONLINE_ENDPOINT string = app.outputs.onlineEndpointName
output BANKML_STORAGE_SYSTEM_TOPIC string = app.outputs.storageTopicName
output BANKML_ML_SYSTEM_TOPIC string = app.outputs.mlTopicName
