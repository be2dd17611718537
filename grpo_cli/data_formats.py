"""The local data files a dataset can be read from: file suffix -> the `datasets` loader that reads it."""

LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
