"""Readers for the on-disk layouts of CPSC 2018, in the style of torch_ecg's database readers.

- :mod:`~xecg.data.readers.icbeb`: the original release, ``TrainingSet*/Axxxx.mat`` (MATLAB v5
  struct ``ECG``); labels only in ``REFERENCE.csv``.
- :mod:`~xecg.data.readers.challenge`: the PhysioNet/CinC Challenge 2020 WFDB release,
  ``Axxxx.hea`` + ``Axxxx.mat`` (MATLAB v4 int16 12 x N); ``#Dx:`` holds CPSC abbreviations
  (v1.0.0) or SNOMED-CT codes (v1.0.2). Other WFDB signal formats go through the wfdb package.

:func:`open_dataset` detects the layout through :data:`READERS`. Every record comes back as a
:class:`~xecg.data.record.Record` with its signal as float32 ``12 x N`` millivolts in
:data:`xecg.classes.LEADS` order; a record that cannot be used raises
:class:`~xecg.data.record.RecordError` whose problem reads ``"<kind>: <detail>"`` (the kind groups
exclusion reasons in summaries).
"""

from xecg.data.readers.base import DatasetError, DatasetReader, Labels, RawRecord
from xecg.data.readers.challenge import WFDBReader
from xecg.data.readers.header import WfdbHeader, WfdbSignal, parse_header
from xecg.data.readers.icbeb import ICBEB_FS, ICBEBReader
from xecg.data.readers.reference import merge_references, read_reference
from xecg.data.readers.registry import READERS, open_dataset, record_suffixes

__all__ = [
    "ICBEB_FS", "READERS", "DatasetError", "DatasetReader", "ICBEBReader",
    "Labels", "RawRecord", "WFDBReader", "WfdbHeader", "WfdbSignal", "merge_references",
    "open_dataset", "parse_header", "read_reference", "record_suffixes",
]
