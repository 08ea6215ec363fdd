"""The sans-IO batch layer: HL7 batch files read and written, and acknowledgement batches.

Nothing here imports Trio; ``iter_events`` and ``read_messages`` read files
with blocking calls. It sits in layer 2 above ``_hl7`` (which never imports
it). The modules, lowest first:

* ``_segments``: FHS/BHS fields, BTS/FTS counts, :class:`BatchError`;
* ``_reader``: the streaming reader (bytes in, events out);
* ``_writer``: the writer (trailer counts written for you);
* ``_acks``: acknowledgement batches, written and matched back.

Import from this package, not from the modules.
"""

from mllp_trio._batch._acks import AckBatchWriter, AckMode, MatchedAck, answer_header, match_acks
from mllp_trio._batch._reader import (
    DEFAULT_MAX_MESSAGE_SIZE,
    NEED_DATA,
    BatchHeader,
    BatchReader,
    BatchTrailer,
    EndOfFile,
    Event,
    FileHeader,
    FileTrailer,
    Message,
    NeedData,
    iter_events,
    read_messages,
)
from mllp_trio._batch._segments import BatchError, HeaderFields
from mllp_trio._batch._writer import BatchWriter, write_batch

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "NEED_DATA",
    "AckBatchWriter",
    "AckMode",
    "BatchError",
    "BatchHeader",
    "BatchReader",
    "BatchTrailer",
    "BatchWriter",
    "EndOfFile",
    "Event",
    "FileHeader",
    "FileTrailer",
    "HeaderFields",
    "MatchedAck",
    "Message",
    "NeedData",
    "answer_header",
    "iter_events",
    "match_acks",
    "read_messages",
    "write_batch",
]
