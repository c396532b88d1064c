"""quantlab: live and historical pair analytics on Binance trades.

Importing this package starts nothing: no thread, no socket, no file, no
logging handler. Import the submodules you need (``quantlab.analytics``,
``quantlab.store``, ``quantlab.ingest`` ...).
"""
from quantlab.errors import QuantlabError

__version__ = "0.1.0"
__all__ = ["QuantlabError", "__version__"]
