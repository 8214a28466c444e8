"""The state adapters: the ledger and the cache in SQLite (one machine) or Redis (replicas)."""
