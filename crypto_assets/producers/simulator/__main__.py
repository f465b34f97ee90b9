"""`python -m crypto_assets.producers.simulator --write-sample PATH`: writes the OHLCV replay
sample (see `samples.py`)."""

from crypto_assets.producers.simulator.samples import main

raise SystemExit(main())
