"""synthvlp: build medical vision-language models from synthetic data.

The package is layered: ``cli`` -> ``runner`` -> stages (``generation``, ``filtering``, ``pretrain``,
``evaluation``) -> core (``config``, ``schema``, ``store``, ``entities``, ``seeding``). Stages never import
each other; what two stages share lives in the core.
"""

from importlib.metadata import PackageNotFoundError, version

from synthvlp.threads import prepare_environment

prepare_environment()  # before torch or NumPy load their thread runtimes (synthvlp/threads.py says why)

try:
    __version__ = version("synthvlp")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
