"""Ingestion: parsers for every source and the one path that stores samples and log lines."""
