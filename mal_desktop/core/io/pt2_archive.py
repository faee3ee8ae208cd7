"""The zip container of a .pt2 program, opened as hostile input.

Nothing here hands archive bytes to torch, pickle or a decompressor without a bound. Members are
found by their exact names in the central directory, and an archive is refused as a whole when
its names could be read two ways (duplicates, names equal but for letter case, absolute paths,
``..``, backslashes), when a member lies outside the layout ``torch.export.save`` writes, when a
member would expand past its declared size or past the limits below (a zip bomb), when member
data overlap or run past the file, or when a JSON member is nested deeper than ``MAX_JSON_DEPTH``.

The example inputs (``data/sample_inputs/model.pt``) are never unpickled: their pickle stream is
only walked opcode by opcode (``pickletools.genops``, a parser that never imports or calls
anything) so that a stream naming anything but torch's tensor-rebuild functions marks the archive
as crafted and it is refused.
"""

from __future__ import annotations

import pickletools
import re
import struct
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import ModelFileError
from ..jsonio import loads_untrusted

#: Limits on what an archive may ask of us. torch.export.save writes one member per weight
#: storage plus a handful of others, stores members uncompressed and writes JSON a few MB long.
MAX_MEMBERS = 10_000
MAX_MEMBER_BYTES = 16 << 30  # declared uncompressed size of one member
MAX_TOTAL_BYTES = 64 << 30  # declared uncompressed size of all members together
MAX_JSON_BYTES = 256 << 20
MAX_JSON_DEPTH = 64
MAX_PICKLE_BYTES = 16 << 20
MAX_RATIO = 200  # uncompressed / compressed, for members larger than RATIO_FLOOR
RATIO_FLOOR = 1 << 20
_ALIGN = 64  # weight data stored at this alignment is used in place, otherwise copied

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_MAGIC = b"PK\x03\x04"

# The members torch.export.save writes for the program "model", relative to the root folder.
# Every other name is refused; extra/ files are allowed and never read.
_LAYOUT = re.compile(r"""^(?:
      archive_format | archive_version | byteorder
    | \.data/version | \.data/serialization_id
    | models/model\.json
    | data/weights/model_weights_config\.json | data/weights/weight_[0-9]{1,9}
    | data/constants/model_constants_config\.json
    | data/constants/(?:tensor|custom_obj|opaque_obj)_[0-9]{1,9}
    | data/sample_inputs/model\.pt
    | extra/[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}
)$""", re.VERBOSE)

# What torch.save writes for tuples and dicts of plain tensors.
_STORAGES = frozenset(f"{kind}Storage" for kind in (
    "Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool",
    "ComplexFloat", "ComplexDouble", "UInt16", "UInt32", "UInt64", "Float8_e4m3fn",
    "Float8_e5m2", "Float8_e4m3fnuz", "Float8_e5m2fnuz"))
_TENSOR_GLOBALS = frozenset({("torch._utils", "_rebuild_tensor_v2"),
                             ("collections", "OrderedDict"), ("torch", "Size")}
                            | {("torch", name) for name in _STORAGES})
_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE",
                         "SHORT_BINSTRING", "BINSTRING", "STRING"})
_MEMO_OPS = frozenset({"MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"})
_REFUSED_OPS = frozenset({"INST", "OBJ", "EXT1", "EXT2", "EXT4"})
def _unsafe_name(name: str) -> bool:
    parts = name.rstrip("/").split("/")
    return (not name or name.startswith("/") or "\\" in name or ":" in parts[0]
            or any(part in ("", ".", "..") or not part.isprintable() for part in parts))


class SafeZip:
    """A zip archive held in memory whose member names and sizes have been checked.

    Parameters:
        path: the model file, named in every error.
        data: the archive's bytes (a ``bytearray`` lets weight data be used in place).
        what: how errors name this archive ("the archive", "the example inputs").
    Raises:
        ModelFileError: not a zip; too many members; an unsafe, duplicate or case-variant
            name; encryption or an unknown compression; declared sizes over the limits or
            past the file; overlapping member data.
    """

    def __init__(self, path: Path, data: bytes | bytearray | memoryview,
                 what: str = "the archive") -> None:
        self.path, self.data, self.what = path, data, what
        not_zip = self.error("not a zip archive (.pt2 files are written by torch.export.save)"
                             if what == "the archive" else
                             f"refusing to load: {what} are not a torch.save archive")
        try:
            # the member count from the end record, before zipfile builds one object per member
            end = zipfile._EndRecData(_ReadOnly(data))  # type: ignore[attr-defined]
            if end is None:
                raise not_zip
            count = end[zipfile._ECD_ENTRIES_TOTAL]  # type: ignore[attr-defined]
            if count > MAX_MEMBERS:
                raise self.error(f"refusing to load: {what} has {count} members (at most "
                                 f"{MAX_MEMBERS})")
            with zipfile.ZipFile(_ReadOnly(data)) as archive:
                infos = archive.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError,
                struct.error, UnicodeDecodeError, IndexError):
            raise not_zip from None
        if len(infos) > MAX_MEMBERS:
            raise self.error(f"refusing to load: {what} has {len(infos)} members (at most "
                             f"{MAX_MEMBERS})")
        names = [info.filename for info in infos]
        for name in names:
            if _unsafe_name(name):
                raise self.error(f"refusing to load: {what} has a member named {name[:80]!r} "
                                 "(absolute path, '..' or an unusual character)")
        if len(set(names)) != len(names):
            raise self.error("malformed .pt2 archive: duplicate member names")
        folded: dict[str, str] = {}
        for name in names:
            other = folded.setdefault(name.casefold(), name)
            if other != name:
                raise self.error(f"refusing to load: {what} has members {other!r} and "
                                 f"{name!r}, whose names differ only in letter case")
        self.infos = {info.filename: info for info in infos}
        self.spans: dict[str, tuple[int, int]] = {}
        self._check_sizes(infos)

    def error(self, problem: str) -> ModelFileError:
        return ModelFileError(self.path, problem)

    def _check_sizes(self, infos: list[zipfile.ZipInfo]) -> None:
        total = 0
        spans = []
        for info in infos:
            name = info.filename
            if info.flag_bits & 0x1:
                raise self.error(f"refusing to load: member {name} is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise self.error(f"refusing to load: member {name} uses an unsupported "
                                 "compression method")
            size, packed = info.file_size, info.compress_size
            total += size
            if size > MAX_MEMBER_BYTES or total > MAX_TOTAL_BYTES:
                raise self.error(f"refusing to load: member {name} declares {size} bytes "
                                 "uncompressed, past the limit (a zip bomb?)")
            if info.compress_type == zipfile.ZIP_STORED and size != packed:
                raise self.error(f"malformed .pt2 archive: stored member {name} declares "
                                 "two different sizes")
            if size > RATIO_FLOOR and size > MAX_RATIO * max(packed, 1):
                raise self.error(f"refusing to load: member {name} would expand "
                                 f"{size // max(packed, 1)}:1 (a zip bomb?)")
            start = self._data_start(info)
            end = start + packed
            if end > len(self.data):
                raise self.error(f"truncated .pt2 archive: member {name} runs past the end "
                                 "of the file")
            self.spans[name] = (start, end)
            spans.append((info.header_offset, end, name))
        spans.sort()
        for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
            if start < end:
                raise self.error(f"refusing to load: members {first} and {second} share "
                                 "their data (a zip bomb?)")

    def _data_start(self, info: zipfile.ZipInfo) -> int:
        offset = info.header_offset
        header = bytes(self.data[offset:offset + _LOCAL_HEADER.size])
        if len(header) != _LOCAL_HEADER.size or header[:4] != _LOCAL_MAGIC:
            raise self.error(f"malformed .pt2 archive: no local header for {info.filename}")
        fields = _LOCAL_HEADER.unpack(header)
        name_len, extra_len = fields[9], fields[10]
        start = offset + _LOCAL_HEADER.size
        raw_name = bytes(self.data[start:start + name_len])
        encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"
        if raw_name != info.orig_filename.encode(encoding, errors="replace"):
            raise self.error(f"malformed .pt2 archive: member {info.filename} has another name "
                             "in its local header")
        return start + name_len + extra_len

    def read(self, name: str, limit: int = MAX_MEMBER_BYTES) -> bytes | memoryview:
        """A member's bytes, decompressed with a bound and checked against its CRC.

        Returns a memoryview into the archive's buffer for stored members (no copy), bytes for
        deflated ones.
        Raises:
            ModelFileError: larger than ``limit``, more or less data than declared, bad CRC.
        """
        info = self.infos[name]
        if info.file_size > limit:
            raise self.error(f"refusing to load: member {name} declares {info.file_size} bytes "
                             f"(at most {limit} for this member)")
        start, end = self.spans[name]
        raw = memoryview(self.data)[start:end]
        if info.compress_type == zipfile.ZIP_STORED:
            out: bytes | memoryview = raw
        else:
            inflater = zlib.decompressobj(-15)
            try:
                out = inflater.decompress(raw, info.file_size + 1)
            except zlib.error:
                raise self.error(f"corrupt .pt2 archive: member {name} does not "
                                 "decompress") from None
            if len(out) > info.file_size:
                raise self.error(f"refusing to load: member {name} holds more data than it "
                                 "declares (a zip bomb?)")
        if len(out) != info.file_size:
            raise self.error(f"truncated .pt2 archive: member {name} is shorter than declared")
        if zlib.crc32(out) != info.CRC:
            raise self.error(f"corrupt .pt2 archive: member {name} fails its CRC check")
        return out


class _ReadOnly:
    """A seekable file over a buffer, for zipfile to read the central directory from."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.view, self.pos = memoryview(data), 0

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 \
            else len(self.view) + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        end = len(self.view) if n is None or n < 0 else min(self.pos + n, len(self.view))
        out = bytes(self.view[self.pos:end])
        self.pos = max(self.pos, end)
        return out

    def seekable(self) -> bool:
        return True


class Pt2Archive:
    """A torch.export archive (.pt2) checked as hostile input: one root folder, the current
    archive format, only the members ``torch.export.save`` writes, no native code, no legacy
    pickled weights. Members are addressed by their names relative to the root folder.

    Raises:
        ModelFileError: see ``SafeZip``, plus a wrong layout or archive version.
    """

    def __init__(self, path: Path, data: bytes | bytearray) -> None:
        self.zip = SafeZip(path, data)
        self.path = path
        names = [n for n in self.zip.infos if not n.endswith("/")]
        roots = {PurePosixPath(n).parts[0] if "/" in n else "" for n in names}
        if len(roots) != 1 or "" in roots:
            raise self.error("not a torch.export program archive (members must share one "
                             "root folder)")
        root = roots.pop()
        self.members = {n[len(root) + 1:]: n for n in names}
        for name in self.members:
            if name.startswith("data/aotinductor/"):
                raise self.error("refusing to load: the archive contains AOTInductor compiled "
                                 "native code")
            if name.startswith(("data/weights/", "data/constants/")) and name.endswith(".pt"):
                raise self.error("refusing to unpickle: the archive stores weights in the "
                                 "legacy pickle layout; re-save it with torch.export.save")
        if self.text("archive_format", missing="") != "pt2":
            raise self.error("not a torch.export program archive (no archive_format 'pt2'; "
                             "files from torch < 2.7 must be re-saved with torch.export.save)")
        if self.text("archive_version", missing="") != "0":
            raise self.error("unsupported .pt2 archive version; re-save it with "
                             "torch.export.save from torch 2.7 or later")
        for name in self.members:
            if not _LAYOUT.match(name):
                raise self.error(f"refusing to load: unexpected member {name[:80]!r} (not "
                                 "part of a torch.export program archive)")
        if self.text("byteorder", missing="little") != "little":
            raise self.error("unsupported .pt2 archive: weights are stored big-endian")

    def error(self, problem: str) -> ModelFileError:
        return ModelFileError(self.path, problem)

    def has(self, name: str) -> bool:
        return name in self.members

    def read(self, name: str, limit: int = MAX_MEMBER_BYTES) -> bytes | memoryview:
        """A member by its name relative to the root folder (see ``SafeZip.read``)."""
        return self.zip.read(self.members[name], limit)

    def text(self, name: str, missing: str) -> str:
        if name not in self.members:
            return missing
        try:
            return bytes(self.read(name, limit=1024)).decode("ascii").strip()
        except UnicodeDecodeError:
            raise self.error(f"corrupt .pt2 archive: {name} is not text") from None

    def json(self, name: str) -> Any:
        """A JSON member, refused when missing, too large, too deep or with duplicate keys."""
        if name not in self.members:
            raise self.error(f"corrupt .pt2 archive: {name} is missing")
        raw = bytes(self.read(name, limit=MAX_JSON_BYTES))
        try:
            return loads_untrusted(raw, MAX_JSON_DEPTH)
        except ValueError as exc:
            if str(exc).startswith("nested"):
                raise self.error(f"refusing to load: {name} is {exc}") from None
            raise self.error(f"corrupt .pt2 archive: {name} is not valid JSON "
                             f"({str(exc)[:80]})") from None

    def check_sample_inputs(self) -> None:
        """Refuse example inputs whose pickle stream names anything but tensor rebuilding.

        The stream is parsed, never unpickled (see the module doc). Empty or absent example
        inputs are fine: they are never used.
        """
        name = "data/sample_inputs/model.pt"
        if not self.has(name):
            return
        data = self.read(name)
        if not len(data):
            return
        what = "the example inputs"
        inner = SafeZip(self.path, data, what)
        pickles = [n for n in inner.infos if n.rsplit("/", 1)[-1].casefold() == "data.pkl"]
        if len(pickles) != 1 or not pickles[0].endswith("/data.pkl") \
                or pickles[0].count("/") != 1:
            raise self.error("refusing to load: the example inputs are not a torch.save "
                             "archive of tensors")
        stream = bytes(inner.read(pickles[0], limit=MAX_PICKLE_BYTES))
        bad = pickle_globals_outside(stream, _TENSOR_GLOBALS)
        if bad:
            raise self.error("refusing to unpickle: the program's example inputs are not "
                             f"tensor-only (they name {bad}, which unpickling would call)")


def pickle_globals_outside(stream: bytes, allowed: frozenset[tuple[str, str]]) -> str | None:
    """The first global a pickle stream would import that is not in ``allowed`` (or a
    description of an opcode that imports without naming, or of a malformed stream); None when
    the stream only names allowed globals. The stream is parsed, never executed."""
    recent: list[Any] = []
    try:
        for opcode, arg, _ in pickletools.genops(stream):
            name = opcode.name
            if name in _REFUSED_OPS:
                return f"the pickle opcode {name}"
            if name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
                if (module, attr) not in allowed:
                    return f"{module}.{attr}"
            elif name == "STACK_GLOBAL":
                if len(recent) < 2 or not all(isinstance(x, str) for x in recent[-2:]):
                    return "a global built at unpickling time"
                if (recent[-2], recent[-1]) not in allowed:
                    return f"{recent[-2]}.{recent[-1]}"
            if name in _MEMO_OPS:
                continue
            recent.append(arg if name in _STRING_OPS else None)
            del recent[:-2]
    except (ValueError, TypeError, EOFError, UnicodeDecodeError, struct.error):
        return "a malformed pickle stream"
    return None
