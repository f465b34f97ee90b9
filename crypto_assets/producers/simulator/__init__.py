"""The market simulator, one module per concern:

config.py        SimulatorConfig (what to simulate, how fast) and the shared time conventions
prices.py        MarketSimulator: correlated GBM prices with regimes, momentum, jumps; volumes
messages.py      paths -> contract ticks; generate_ticks / generate_messages (no Kafka)
bad_messages.py  BAD_KINDS, make_bad_message and the BadInjector that mixes them in
samples.py       the OHLCV replay sample (`python -m crypto_assets.producers.simulator --write-sample PATH`)
run.py           run_simulator: history and live sends to the raw topic (and/or the trades topic)
trades.py        the trade mode: TradeTape (Poisson trades on the tick path), generate_trades
trade_bad_messages.py  TRADE_BAD_KINDS, make_bad_trade and the TradeBadInjector
trade_run.py     sending trades beside the ticks; the live loop of the trades/both modes
"""
