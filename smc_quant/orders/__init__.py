"""Order building blocks of the SmartOrderManager, all pure (no I/O, no asyncio).

- ``filters``: exchangeInfo filters applied in Decimal, and the wire strings of price and quantity.
- ``signing``: HMAC-SHA256 request signing, ``recvWindow``, and the server-clock offset.
- ``client_ids``: our deterministic ``newClientOrderId`` / ``clientAlgoId``.
- ``reactions``: Binance error codes → what the executor does next, in one table.

The async SmartOrderManager that sends orders, queries after timeouts and persists them sits outside this
package (``smc_quant/order_manager.py``) and uses these pieces; see ``docs/orders.md``.
"""
