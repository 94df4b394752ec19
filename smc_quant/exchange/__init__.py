"""Binance USDT-M adapter: wire schemas, REST and stream clients, and the built-in emulator."""
