// What needs the deployed code: the blob trigger's extension key and the functions themselves
// exist only once the host runs. Deployed by scripts/azure_postdeploy.sh after `azd deploy`.
//
//   BlobCreated in incoming/  -> the Event Grid blob trigger of `ingest`
//       https://<app>/runtime/webhooks/blobs?functionName=Host.Functions.ingest&code=<blobs_extension key>
//   RunCompleted / RunStatusChanged -> `deploy_best_model`; RunCompleted -> `enable_insights`
//       (endpoint type AzureFunction: Event Grid calls the function with its own credentials)
//   the benchmark's function key (BANKML_RELAY_KEY) on the host
param functionAppName string
param storageTopicName string
param mlTopicName string
param incomingContainer string = 'incoming'
@secure()
param relayKey string

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource storageTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: storageTopicName
}

resource mlTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: mlTopicName
}

resource benchmarkKey 'Microsoft.Web/sites/host/functionKeys@2024-04-01' = {
  name: '${functionAppName}/default/benchmark'
  properties: {
    name: 'benchmark'
    value: relayKey
  }
}

var blobsExtensionKey = listKeys('${site.id}/host/default', '2024-04-01').systemKeys.blobs_extension

resource ingestSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: storageTopic
  name: 'bankml-ingest'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: 'https://${site.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.ingest&code=${blobsExtensionKey}'
      }
    }
    filter: {
      includedEventTypes: ['Microsoft.Storage.BlobCreated']
      subjectBeginsWith: '/blobServices/default/containers/${incomingContainer}/blobs/'
    }
    eventDeliverySchema: 'EventGridSchema'
    retryPolicy: { maxDeliveryAttempts: 30, eventTimeToLiveInMinutes: 1440 }
  }
}

resource deploySubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: mlTopic
  name: 'bankml-deploy-best-model'
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${site.id}/functions/deploy_best_model'
        maxEventsPerBatch: 1
      }
    }
    filter: {
      includedEventTypes: [
        'Microsoft.MachineLearningServices.RunCompleted'
        'Microsoft.MachineLearningServices.RunStatusChanged'
      ]
    }
    eventDeliverySchema: 'EventGridSchema'
    retryPolicy: { maxDeliveryAttempts: 30, eventTimeToLiveInMinutes: 1440 }
  }
}

resource insightsSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: mlTopic
  name: 'bankml-enable-insights'
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${site.id}/functions/enable_insights'
        maxEventsPerBatch: 1
      }
    }
    filter: {
      includedEventTypes: ['Microsoft.MachineLearningServices.RunCompleted']
    }
    eventDeliverySchema: 'EventGridSchema'
    retryPolicy: { maxDeliveryAttempts: 30, eventTimeToLiveInMinutes: 1440 }
  }
}
