"""Ingest: device messages from MQTT into InfluxDB 3 or SQLite, at least once and without duplicates.

One module per concern:
  parsing      MQTT message -> points, or a Rejected reason (line protocol, JSON, status, OTA events)
  records      Point, DeadLetter, line protocol serialisation
  batching     size/time bounds of a batch
  spool        batches the store could not take, on disk, replayed in order
  deadletters  rejected messages with their reason (local SQLite)
  store        the Store interface (writes + latest/last-seen/series queries)
  sqlite_store embedded store (WAL);  influx_store  InfluxDB 3 (v3 write_lp, Flight SQL)
  pipeline     Ingestor: parse, batch, make durable, then acknowledge
  consumer     MqttConsumer: paho, MQTT v5 persistent session, manual acks
  metrics      Prometheus metrics

Readers (operator status, local report) use `SQLiteStore(path)` or `InfluxStore(host, database, token)`
and only the query methods of `store.Store`.
"""
