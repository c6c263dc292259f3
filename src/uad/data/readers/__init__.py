"""Dataset readers: one decorated function per layout (`registry.reader`), each in the module of its layout;
importing this package registers them all."""

from uad.data.readers.realiad import REALIAD_CLASSES, read_realiad
from uad.data.readers.registry import (
    READERS,
    Catalog,
    Reader,
    Splits,
    check_counts,
    count,
    get_reader,
    open_catalog,
    reader,
    select_classes,
)
from uad.data.readers.tree import MPDD_COUNTS, MVTEC_COUNTS, read_folder, read_mvtec_tree
from uad.data.readers.visa import VISA_COUNTS, read_visa

__all__ = [
    "MPDD_COUNTS",
    "MVTEC_COUNTS",
    "READERS",
    "REALIAD_CLASSES",
    "VISA_COUNTS",
    "Catalog",
    "Reader",
    "Splits",
    "check_counts",
    "count",
    "get_reader",
    "open_catalog",
    "read_folder",
    "read_mvtec_tree",
    "read_realiad",
    "read_visa",
    "reader",
    "select_classes",
]
