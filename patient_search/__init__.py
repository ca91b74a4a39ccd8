"""The `patient-search` command: migrate, reindex, indexer, serve, apikey, check, demo."""
