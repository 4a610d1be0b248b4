"""Reading every input through one guarded reader, and writing outputs without loss.

- :mod:`calm_rag.io.read`: bytes → UTF-8 text → JSON, every failure an ``InputError``.
- :mod:`calm_rag.io.write`: atomic files and our own folders, locks.
- :mod:`calm_rag.io.outputs`: a user's ``--out`` folder, our files beside theirs.
"""

from calm_rag.io.outputs import MARKER, OutputFolder, output_folder, refuse_inputs, safe_name
from calm_rag.io.read import (
    decode,
    expect,
    expect_list,
    expect_map,
    json_type,
    loads,
    read_bytes,
    read_json,
    read_json_array,
    read_json_object,
    read_jsonl,
    read_text,
)
from calm_rag.io.write import (
    atomic_dir,
    atomic_write,
    exclusive_lock,
    write_json,
    write_jsonl,
)

__all__ = [
    "MARKER",
    "OutputFolder",
    "atomic_dir",
    "atomic_write",
    "decode",
    "exclusive_lock",
    "expect",
    "expect_list",
    "expect_map",
    "json_type",
    "loads",
    "output_folder",
    "read_bytes",
    "read_json",
    "read_json_array",
    "read_json_object",
    "read_jsonl",
    "read_text",
    "refuse_inputs",
    "safe_name",
    "write_json",
    "write_jsonl",
]
