"""The market report: PNG figures and a markdown page a person reads instead of tables.

market_data (DuckDB) and model_history (MLflow) load what the report shows; plots and model_plot
draw it; formatting holds the text both the figures and markdown use; publish writes it all
to <CRYPTO_HOME>/reports/ (the Dagster asset is crypto_assets.defs.report)."""
