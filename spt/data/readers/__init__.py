"""Native-layout readers behind one interface, looked up by layout name."""

from __future__ import annotations

from spt.data.readers.base import LayoutReader, ScanResult
from spt.data.readers.btad import BTADReader
from spt.data.readers.folder import FolderReader
from spt.data.readers.ksdd2 import KSDD2Reader
from spt.data.readers.mtd import MTDReader
from spt.data.readers.mvtec import MPDDReader, MVTecReader
from spt.data.readers.mvtec_ad2 import MVTecAD2Reader
from spt.data.readers.spt_archive import SPTArchiveReader
from spt.data.readers.visa import VisAReader
from spt.errors import SuiteError

READERS: dict[str, LayoutReader] = {
    reader.layout: reader
    for reader in (
        MVTecReader(),
        MVTecAD2Reader(),
        VisAReader(),
        MPDDReader(),
        BTADReader(),
        KSDD2Reader(),
        MTDReader(),
        SPTArchiveReader(),
        FolderReader(),
    )
}


def get_reader(layout: str, where: str = "") -> LayoutReader:
    """The reader of ``layout``; ``where`` (e.g. ``my.yaml data.datasets.x.layout``) names the
    setting in the error, which otherwise points at params.yaml."""
    try:
        return READERS[layout]
    except KeyError:
        at = f"{where}: " if where else ""
        fix = "set it to" if where else "in params.yaml use"
        raise SuiteError(
            f"{at}unknown dataset layout {layout!r}; {fix} one of {', '.join(READERS)}"
        ) from None


__all__ = ["READERS", "LayoutReader", "ScanResult", "get_reader"]
