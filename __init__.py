"""LongLLaVA domain toolkit.

The repository root is the ``longllava`` package: ``longllava.core`` (model, protocol, processor,
checkpoint I/O), ``longllava.domains.medical``, ``longllava.domains.remote_sensing``,
``longllava.finetune``, ``longllava.eval`` and ``longllava.apps``.
"""

__version__ = "0.1.0"
