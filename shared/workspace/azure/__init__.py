"""The azure backend: Azure ML (data assets, training pipeline, managed online endpoints) behind
the workspace port, with the app's own records in a blob container.

Nothing here imports azure-ai-ml at module import time: it is slow to import and the local
backend must not pay for it.
"""
