"""The read API (`crypto-assets serve`): FastAPI over the Parquet gold mirror under the lake.

It never opens warehouse.duckdb, whose one read-write process is the live pipeline: every query
runs on an in-memory DuckDB over the mirror's files, under the lake's shared read lock, so other
programs can read the gold tables while the pipeline runs."""
