"""Third-party files dal ships unchanged, each with its licence (see each folder's README.md)."""
