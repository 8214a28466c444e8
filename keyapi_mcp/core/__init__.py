"""The credit core: domain types, the ports it talks to (store, upstream), the call budget and the service."""
