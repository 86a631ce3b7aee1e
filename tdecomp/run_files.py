"""The files of a run folder, named once: what the trainer writes and everything else reads (and the
records file a sweep writes in its root)."""

CONFIG = "config.yaml"  # the resolved TrainConfig
METRICS = "metrics.jsonl"  # one record per epoch
SUMMARY = "summary.json"  # written when the run finishes
DYNAMICS = "dynamics.jsonl"  # DynamicsTracker records (track_every > 0)
RECORDS = "records.jsonl"  # a sweep root's records: one line per finished run (tdecomp.records)
