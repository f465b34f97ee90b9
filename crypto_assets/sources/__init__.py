"""Producers that write contract ticks to `crypto_raw`: CoinGecko poller, simulator, replay."""
