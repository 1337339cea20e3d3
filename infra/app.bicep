// The resources of one bankml environment (resource-group scope; called by main.bicep).
//
//   storage (identity only, no shared keys): incoming/ rejected/ reports/ bankml-state/ + the
//     Flex Consumption deployment container
//   function app: Flex Consumption, Python 3.11, system-assigned managed identity
//   Application Insights (+ Log Analytics): the function app's and the online deployments' telemetry
//   Azure ML workspace (+ its storage account and key vault)
//   Event Grid system topics on the storage account and on the ML workspace
//   role assignments of the function app's identity (and of the person running azd)
param location string
param tags object
param resourceToken string
param principalId string
@secure()
param relayKey string
param trainingTrigger string
param publishedPipelineUrl string
param instanceType string
param experimentName string

var functionAppName = 'func-bankml-${resourceToken}'
var deploymentContainerName = 'app-package-${take(resourceToken, 10)}'
// Online and batch endpoint names are unique per region (they are DNS names).
var onlineEndpointName = 'bankml-${take(resourceToken, 10)}'
var batchEndpointName = 'bankml-train-${take(resourceToken, 10)}'
var stateContainerName = 'bankml-state'

// Built-in role definition ids
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var azureMLDataScientist = 'f6c7c914-8db3-469d-8ca1-694a8f32e121'

// -- storage of the app ----------------------------------------------------------------------
resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'stbankml${take(resourceToken, 14)}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false // identities only: no connection string exists to leak
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }

  resource blobs 'blobServices' = {
    name: 'default'
    resource deployments 'containers' = { name: deploymentContainerName }
    resource incoming 'containers' = { name: 'incoming' }
    resource rejected 'containers' = { name: 'rejected' }
    resource reports 'containers' = { name: 'reports' }
    resource state 'containers' = { name: stateContainerName }
  }
}

// -- monitoring ------------------------------------------------------------------------------
resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-bankml-${resourceToken}'
  location: location
  tags: tags
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-bankml-${resourceToken}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
  }
}

// -- the function app ------------------------------------------------------------------------
resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-bankml-${resourceToken}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { tier: 'FlexConsumption', name: 'FC1' }
  properties: { reserved: true }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: functionAppName
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: { type: 'SystemAssigned' }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: { minTlsVersion: '1.2' }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: { type: 'SystemAssignedIdentity' }
        }
      }
      scaleAndConcurrency: { maximumInstanceCount: 40, instanceMemoryMB: 2048 }
      runtime: { name: 'python', version: '3.11' }
    }
  }
  dependsOn: [storage::blobs::deployments]
}

// Every app setting the app reads (shared/config.py SETTINGS, documented in
// local.settings.json.example) plus the Functions host's own; tests/test_azure_infra.py checks
// that the two lists agree. No keys: storage is identity-based.
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: {
    // Functions host
    AzureWebJobsStorage__accountName: storage.name
    AzureWebJobsFeatureFlags: 'EnableWorkerIndexing'
    APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
    // the app
    BANKML_BACKEND: 'azure'
    BANKML_HOME: '/tmp/bankml'
    BANKML_FUNCTION_HOST_URL: 'https://${site.properties.defaultHostName}'
    BANKML_REJECTED_CONTAINER: 'rejected'
    BANKML_REPORTS_CONTAINER: 'reports'
    BANKML_LABEL_COLUMN: 'y'
    BANKML_MAX_UPLOAD_MB: '500'
    BANKML_EXPERIMENT_NAME: experimentName
    BANKML_TIME_BUDGET_S: '60'
    BANKML_PRIMARY_METRIC: 'AUC_weighted'
    BANKML_MIN_PRIMARY_METRIC: '0.70'
    BANKML_DEPLOY_MARGIN: '0.0'
    BANKML_RELAY_TIMEOUT_S: '30'
    BANKML_MAX_ROWS: '10000'
    BANKML_MAX_BODY_MB: '16'
    BANKML_BENCHMARK_SCHEDULE: '0 */30 * * * *'
    BANKML_RETRAIN_SCHEDULE: ''
    BANKML_BENCH_REQUESTS: '200'
    BANKML_BENCH_DURATION_S: '20'
    BANKML_BENCH_CONCURRENCY: '4'
    BANKML_BENCH_PAYLOAD_FILE: ''
    BANKML_BENCH_PAYLOAD_ROWS: '0'
    BANKML_RELAY_KEY: relayKey
    // local backend only (its model-server supervisor); the azure backend does not use them
    BANKML_LIVENESS_INTERVAL_S: '1'
    BANKML_LIVENESS_TIMEOUT_S: '2'
    BANKML_LIVENESS_FAILURES: '3'
    BANKML_WARM_STANDBY: '1'
    BANKML_WORKER_GRACE_S: ''
    // the azure backend
    AZURE_SUBSCRIPTION_ID: subscription().subscriptionId
    AZURE_RESOURCE_GROUP: resourceGroup().name
    AZURE_ML_WORKSPACE: mlWorkspace.name
    BANKML_AZURE_TRIGGER: trainingTrigger
    BANKML_AZURE_BATCH_ENDPOINT: batchEndpointName
    BANKML_AZURE_PIPELINE_URL: publishedPipelineUrl
    BANKML_AZURE_PIPELINE_INPUT: 'training_data'
    BANKML_AZURE_ONLINE_ENDPOINT: onlineEndpointName
    BANKML_AZURE_INSTANCE_TYPE: instanceType
    BANKML_AZURE_INSTANCE_COUNT: '1'
    BANKML_AZURE_SCORING_SCRIPT: 'scoring_file_v_1_0_0.py'
    BANKML_AZURE_STATE_CONTAINER: stateContainerName
  }
}

// -- Azure ML workspace ----------------------------------------------------------------------
resource mlStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'stbankmlml${take(resourceToken, 12)}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
}

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: 'kv-bankml-${take(resourceToken, 12)}'
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    softDeleteRetentionInDays: 7
  }
}

resource mlWorkspace 'Microsoft.MachineLearningServices/workspaces@2024-04-01' = {
  name: 'mlw-bankml-${resourceToken}'
  location: location
  tags: tags
  identity: { type: 'SystemAssigned' }
  sku: { name: 'Basic', tier: 'Basic' }
  properties: {
    friendlyName: 'bankml'
    storageAccount: mlStorage.id
    keyVault: keyVault.id
    applicationInsights: appInsights.id // online deployments with app_insights_enabled report here
    publicNetworkAccess: 'Enabled'
  }
}

// -- Event Grid system topics (subscriptions: wiring.bicep) ------------------------------------
resource storageTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: 'evgt-bankml-storage-${resourceToken}'
  location: location
  tags: tags
  properties: {
    source: storage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

resource mlTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: 'evgt-bankml-ml-${resourceToken}'
  location: location
  tags: tags
  properties: {
    source: mlWorkspace.id
    topicType: 'Microsoft.MachineLearningServices.Workspaces'
  }
}

// -- role assignments ------------------------------------------------------------------------
// The Functions host (identity-based AzureWebJobsStorage: blobs, leases, the blob trigger's
// receipts and poison queue) and the app (rejected/, reports/, bankml-state/).
resource appBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, site.id, storageBlobDataOwner)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: site.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource appQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, site.id, storageQueueDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: site.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// Data assets, jobs, models, online deployments and their traffic, endpoint keys.
resource appMLDataScientist 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: mlWorkspace
  name: guid(mlWorkspace.id, site.id, azureMLDataScientist)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', azureMLDataScientist)
    principalId: site.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// Uploading data assets and reading run outputs in the workspace's datastore.
resource appMLStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: mlStorage
  name: guid(mlStorage.id, site.id, storageBlobDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: site.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// The person running azd: `az storage blob upload --auth-mode login` into incoming/.
resource userBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(principalId)) {
  scope: storage
  name: guid(storage.id, principalId, storageBlobDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: principalId
    principalType: 'User'
  }
}

output functionAppName string = site.name
output functionAppUrl string = 'https://${site.properties.defaultHostName}'
output storageAccountName string = storage.name
output mlWorkspaceName string = mlWorkspace.name
output onlineEndpointName string = onlineEndpointName
output batchEndpointName string = batchEndpointName
output storageTopicName string = storageTopic.name
output mlTopicName string = mlTopic.name
