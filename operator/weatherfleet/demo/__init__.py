"""`weatherfleet demo`: the scripted story told on the local system (`story`), and its HTML report with
the rollout timeline and the measurement charts (`report`, `reportdata`, `svg`)."""
