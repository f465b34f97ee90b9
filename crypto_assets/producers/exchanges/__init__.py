"""Exchange trade sources (Coinbase, Binance): WebSocket streams, REST gap healing and history."""
