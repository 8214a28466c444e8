"""The upstream adapter: one HTTP client for KeyAPI, the pure classification of each outcome, the demo data."""
