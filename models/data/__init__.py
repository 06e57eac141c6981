"""Dataset readers: every source yields ``Case`` records (see ``sources.SOURCES``)."""
from .records import CLASSES, Case, DatasetError, DatasetRead, Problem
from .sources import DEFAULT_DATA_DIR, SOURCES, find_dataset_roots, load_cases, read_dataset, read_datasets

__all__ = ["CLASSES", "Case", "DatasetError", "DatasetRead", "Problem", "DEFAULT_DATA_DIR", "SOURCES",
           "find_dataset_roots", "load_cases", "read_dataset", "read_datasets"]
