"""crypto_assets code location."""
