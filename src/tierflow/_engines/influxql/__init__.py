"""InfluxDB 1.x: everything that speaks InfluxQL (the engine, exports, query templates)."""
