"""`tierflow import`: the configs that do the work of what users already run on InfluxDB —
1.x continuous queries (`import_influxdb1`) and 2.x tasks (`import_influxdb2`)."""

from tierflow._importing._influxdb1 import import_influxdb1
from tierflow._importing._influxdb2 import import_influxdb2
from tierflow._importing._server import Connection, secret_source

__all__ = ["Connection", "import_influxdb1", "import_influxdb2", "secret_source"]
