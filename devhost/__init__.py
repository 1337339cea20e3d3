"""A local Azure Functions host for Python v2 apps, plus the Azurite launcher it runs beside.

Azure Functions Core Tools cannot be installed offline, so this package loads ``function_app.py``,
reads each function's own trigger metadata and drives HTTP, Event Grid, blob and timer triggers
the way the Functions host does.
"""

from devhost.azurite import Azurite, AzuriteError
from devhost.catalog import HostError
from devhost.host import FunctionHost
from devhost.keys import HostKeys

__all__ = ["Azurite", "AzuriteError", "FunctionHost", "HostError", "HostKeys"]
