"""glocal datasets: loaders for published layouts and generators of new sets from the user's own images.

Generators register with :func:`register_generator` and are run by ``bench datasets make NAME --from
IMAGES --out DIR``. Modules here import heavy libraries lazily, inside the functions that need them.
"""

from glocal.datasets.registry import DatasetError, Generator, generators, get_generator, register_generator

__all__ = ["DatasetError", "Generator", "generators", "get_generator", "register_generator"]
