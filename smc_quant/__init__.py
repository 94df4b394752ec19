"""smc-quant: the library.

Pure domain code (``domain``, ``smc``, ``features``) imports no I/O library; adapters to the
exchange (``exchange``), the database and cache (``store``) and the ops surface (``ops``) sit at
the edge. The running service lives in the separate ``shards`` package, which imports this one
and never the reverse.
"""

__version__ = "0.1.0"
