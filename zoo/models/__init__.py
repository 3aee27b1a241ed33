"""One file per model family; importing this package registers every family it finds here."""

from glocal.zoo.registry import import_submodules

import_submodules(__name__, __path__)
