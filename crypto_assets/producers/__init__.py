"""Producers of the tick contract on `crypto_raw`: the market simulator (`simulator/`), the
CoinGecko poller (`coingecko.py`, HTTP in `coingecko_client.py`) and the file replay
(`replay.py`, reading in `replay_reader.py`)."""
