"""Incremental transformations behind the silver and gold assets.

Each function takes a DuckDB connection, does work proportional to the rows past its asset's
high-water mark (plus the look-back its windows need), and commits its rows together with its
new state in one transaction: all of them through crypto_assets.warehouse.incremental_table.
"""
