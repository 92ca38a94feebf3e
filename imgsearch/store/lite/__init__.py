"""Milvus Lite: the one server per index file, its keeper, locks, damage checks and disk troubles."""
