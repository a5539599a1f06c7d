"""The suite's file artifacts: the one atomic writer, and the formats more than one layer reads.

Every file the suite writes goes through :func:`replace_atomically`: written to a temp file in
its own folder and renamed over the target, so a kill never leaves a partial file.
``tempfile.mkstemp`` creates the temp file 0600; before the rename it gets the mode a plain
``open(path, "w")`` would give (0666 minus the umask), so outputs are as readable as the user's
other files, and a failed write removes the temp file.

Formats kept here because writer and reader live in different layers:

- torch archives (:func:`save_torch`: checkpoints, ``trained.pt``, the shipped tiny SAM) with a
  content-derived serialization id, so equal content gives equal bytes;
- ``trained.pt`` (:data:`TRAINED_FORMAT`, written by ``spt train``, read by ``spt evaluate``:
  :func:`read_trained`, :func:`load_trained`);
- ``examples.npz``, the kept predicted masks for figures (:func:`save_examples`,
  :func:`read_examples`).

This module is the lowest layer with ``spt.errors`` (docs/architecture.md): it imports no other
part of the suite.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import shutil
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch

from spt.errors import SuiteError


def usual_mode() -> int:
    """0666 minus the process umask (read without changing it for longer than a call)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _flush_to_disk(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 4 MiB blocks (checkpoints are gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def replace_atomically(path: Path, write: Callable[[str], None]) -> None:
    """Create ``path``'s folder, call ``write(temp_path)``, flush it to disk (fsync), then rename
    the temp file onto ``path`` with :func:`usual_mode`; on any error (or a kill between the
    two) the target is unchanged and the temp file removed. A folder that cannot be created or
    written to, and a full disk, are one-line SuiteErrors naming the file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise SuiteError(
            f"{path}: cannot write here ({exc.strerror}); check the output folder (--out) and "
            "its permissions"
        ) from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, usual_mode())
        _flush_to_disk(tmp)  # the rename must not reach the disk before the bytes do
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise SuiteError(
                f"{path}: not written, the disk is full ({exc.strerror}); the previous file, if "
                "any, is unchanged: free space or choose another --out, then rerun"
            ) from None
        raise


def publish_folder(staging: Path, target: Path) -> None:
    """Rename the fully written folder ``staging`` onto ``target`` (a sibling), removing what
    was at ``target`` first: readers see the old folder or the new one, never half of one.
    The caller checks that ``target`` holds nothing it may not remove."""
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)


@contextlib.contextmanager
def folder_lock(folder: Path, command: str) -> Iterator[None]:
    """Hold ``<folder>/.lock`` while ``command`` writes ``folder``: a second run writing the same
    folder at the same time would mix its files with this one's (records of one config, the
    summary of another). The second run gets one line naming the holder; the lock goes with the
    process (an advisory ``flock``), so a killed run never leaves the folder locked; the file
    is removed when the block ends."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    handle = open(path, "a+")  # noqa: SIM115 - held for the whole block
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise SuiteError(
                f"{folder}: `{holder}` is writing here; wait for it to end or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"spt {command} (pid {os.getpid()})")
        handle.flush()
        try:
            yield
        finally:
            path.unlink(missing_ok=True)  # outputs stay as the command wrote them
    finally:
        handle.close()


def write_text_atomically(path: Path, text: str) -> None:
    """``text`` (UTF-8) to ``path`` via :func:`replace_atomically`."""
    replace_atomically(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def save_torch(obj: Any, path: Path) -> None:
    """``torch.save`` via :func:`replace_atomically`, with a content-derived serialization id."""
    import torch  # here, not at the top: `spt --help` must not wait for torch

    # into memory first: saved to a path, torch names the archive's records after the
    # (random) temp file name
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = _with_stable_serialization_id(buffer.getvalue())
    replace_atomically(Path(path), lambda tmp: Path(tmp).write_bytes(data))


_ID_RECORD = ".data/serialization_id"


def _with_stable_serialization_id(archive_bytes: bytes) -> bytes:
    """Replace the random id torch.save writes into every archive with one derived from the
    archive's content, so equal content gives equal bytes (DVC and dvc.lock see no change).

    The record is stored uncompressed; its CRC is fixed in the local header, the data
    descriptor and the central directory. torch only compares the id between files it
    loaded, so any content-derived id of the same length serves.
    """
    data = bytearray(archive_bytes)
    with zipfile.ZipFile(io.BytesIO(archive_bytes)) as archive:
        infos = [i for i in archive.infolist() if i.filename.endswith(_ID_RECORD)]
    if len(infos) != 1 or infos[0].compress_type != zipfile.ZIP_STORED:
        return archive_bytes  # another torch layout: leave it as torch wrote it
    info = infos[0]
    offset = info.header_offset
    name_len, extra_len = struct.unpack_from("<HH", data, offset + 26)
    start = offset + 30 + name_len + extra_len
    end = start + info.file_size
    data[start:end] = b"0" * info.file_size
    digest = str(int(hashlib.sha256(data).hexdigest(), 16)).encode()
    new_id = (digest * 2)[: info.file_size]
    data[start:end] = new_id
    crc = zlib.crc32(new_id)
    if struct.unpack_from("<I", data, offset + 14)[0]:
        struct.pack_into("<I", data, offset + 14, crc)
    if info.flag_bits & 0x08:  # data descriptor after the data, with or without its signature
        at = end + 4 if data[end : end + 4] == b"PK\x07\x08" else end
        struct.pack_into("<I", data, at, crc)
    name = info.filename.encode()
    central = data.find(b"PK\x01\x02")
    while central != -1:
        (length,) = struct.unpack_from("<H", data, central + 28)
        if bytes(data[central + 46 : central + 46 + length]) == name:
            struct.pack_into("<I", data, central + 16, crc)
            break
        central = data.find(b"PK\x01\x02", central + 4)
    return bytes(data)


# --- trained.pt -------------------------------------------------------------------------------

TRAINED_FORMAT = "spt-suite-trained/1"


class LoadsTrainedState(Protocol):
    """What :func:`load_trained` needs of a method (``spt.harness.method.Method`` has it)."""

    name: str
    backbone: str
    params: Mapping[str, Any]  # methods.<name> as given
    config: Any  # the checked params: a frozen dataclass (spt.harness.method.MethodConfig)

    def load_trained_state(self, state: Mapping[str, torch.Tensor]) -> None: ...


def plain(value: Any) -> Any:
    """``value`` as plain data, what ``torch.load(weights_only=True)``, JSON and
    ``yaml.safe_dump`` all accept: a dataclass as a dict of its settings (internal fields
    left out), mappings with text keys, tuples as lists; any other object as its text."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not f.metadata.get("internal")
        }
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _trained_config(method: LoadsTrainedState, blob: dict[str, Any]) -> dict[str, Any]:
    """The checked params the weights were trained with: stored since format 1 as
    ``method_config``; older files hold only the params as given, checked here the same way."""
    if isinstance(blob.get("method_config"), dict):
        return blob["method_config"]
    given = dict(blob.get("method_params") or {})
    given.pop("train", None)
    try:
        return plain(type(method.config)(**given))
    except TypeError:
        return {"(unreadable params)": sorted(given)}


def check_trained_params(method: LoadsTrainedState, blob: dict[str, Any], path: Path) -> None:
    """Weights trained with other method params (a VRA threshold, a LoRA rank) would be scored
    under the current ones without a word: refuse, naming every key that differs."""
    trained, current = _trained_config(method, blob), plain(method.config)
    differ = sorted(k for k in trained.keys() | current.keys() if trained.get(k) != current.get(k))
    if differ:
        shown = ", ".join(
            f"{k} {trained.get(k)!r} (now {current.get(k)!r})" for k in differ[:4]
        ) + (", ..." if len(differ) > 4 else "")
        raise SuiteError(
            f"{path}: trained with other methods.{method.name} params: {shown}; evaluate with "
            "the params it was trained with, or retrain"
        )


def check_finite(state: Mapping[str, torch.Tensor], path: Path) -> None:
    """A trained state with NaN or inf weights scores IoU 0 as if it were a result: refuse."""
    import torch

    bad = [name for name, value in state.items() if not bool(torch.isfinite(value).all())]
    if bad:
        raise SuiteError(
            f"{path}: {len(bad)} trained tensor(s) hold NaN or inf (e.g. {bad[0]}); the training "
            "diverged: lower train.lr or set train.grad_clip, and retrain"
        )


def read_trained(path: str | Path) -> dict[str, Any]:
    """A ``trained.pt`` written by ``spt train`` -> its dict; anything else is a SuiteError."""
    path = Path(path)
    if path.is_dir():
        raise SuiteError(f"{path}: is a directory; pass the trained.pt file that `spt train` wrote")
    if not path.is_file():
        raise SuiteError(f"{path}: trained checkpoint not found; run `spt train` first")
    import torch

    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable or unsafe file gets the same one-line answer
        raise SuiteError(
            f"{path}: unreadable trained checkpoint ({type(exc).__name__}); retrain"
        ) from None
    if not isinstance(blob, dict) or blob.get("format") != TRAINED_FORMAT:
        raise SuiteError(f"{path}: not a checkpoint written by `spt train`")
    return blob


def load_trained(method: LoadsTrainedState, path: str | Path) -> dict[str, Any]:
    """Load a ``trained.pt`` into ``method``, checking it was made for this method, backbone and
    method params, and that its weights are finite."""
    blob = read_trained(path)
    if (blob["method"], blob["backbone"]) != (method.name, method.backbone):
        raise SuiteError(
            f"{path}: trained for {blob['method']} on {blob['backbone']}, not "
            f"{method.name} on {method.backbone}; pass the matching --method/--backbone"
        )
    if not hasattr(method, "load_trained_state"):  # not a TrainableMethod
        raise SuiteError(f"{path}: method {method.name!r} is not trainable; drop --trained")
    check_trained_params(method, blob, Path(path))
    if not isinstance(blob.get("trained"), dict):
        raise SuiteError(f"{path}: holds no trained tensors; retrain")
    check_finite(blob["trained"], Path(path))
    try:
        method.load_trained_state(blob["trained"])
    except SuiteError as exc:
        raise SuiteError(f"{path}: {exc}") from None
    except (ValueError, RuntimeError, KeyError) as exc:
        raise SuiteError(f"{path}: does not fit this method's configuration ({exc})") from None
    return blob


# --- examples.npz -----------------------------------------------------------------------------


def assign_named_tensors(
    params: Mapping[str, torch.nn.Parameter], state: Mapping[str, torch.Tensor], what: str
) -> None:
    """Copy ``state`` into ``params`` (same names, same shapes) or raise a one-line SuiteError
    saying what does not fit; ``what`` names the method and its configuration."""
    missing, unexpected = set(params) - set(state), set(state) - set(params)
    if missing or unexpected:
        raise SuiteError(
            f"trained state does not fit {what} (missing {sorted(missing)[:3]}, unexpected "
            f"{sorted(unexpected)[:3]}); load it with the params it was trained with"
        )
    wrong = [name for name, value in state.items() if value.shape != params[name].shape]
    if wrong:
        raise SuiteError(
            f"trained state does not fit {what}: other shapes ({wrong[0]} is "
            f"{tuple(state[wrong[0]].shape)}, expected {tuple(params[wrong[0]].shape)}); load it "
            "with the params it was trained with"
        )
    import torch  # only when weights are copied: the base layer loads without torch

    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].device))


def save_examples(kept: Mapping[str, np.ndarray], path: Path) -> None:
    """Write the kept masks ({"<image id>|<mode>|<stage>": bool (H,W)}), bit-packed, with their
    shapes, via :func:`replace_atomically`."""
    arrays = {}
    for key, mask in kept.items():
        arrays[f"{key}|bits"] = np.packbits(mask.astype(bool))
        arrays[f"{key}|shape"] = np.asarray(mask.shape)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:  # a file object: np.savez would append ".npz" to a name
            np.savez_compressed(handle, **arrays)

    replace_atomically(Path(path), write)


def read_examples(path: str | Path) -> dict[str, np.ndarray]:
    """``examples.npz`` of an evaluation -> {"<image id>|<mode>|<stage>": bool (H,W)}."""
    with np.load(path) as data:
        keys = {k.rsplit("|", 1)[0] for k in data.files}
        return {
            k: np.unpackbits(data[f"{k}|bits"])[: int(np.prod(data[f"{k}|shape"]))]
            .reshape(tuple(data[f"{k}|shape"]))
            .astype(bool)
            for k in keys
        }
