"""Process entry points and loops: ingest, score, notify, demo."""
