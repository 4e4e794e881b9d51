"""Thin Prefect task wrappers around lib/ (retries, tags, names); no logic of their own."""
