"""HDF5 inputs through h5py: ilastik's probability maps, and the arrays pose and tracking tools keep in ``.h5``.

An input is a file (``maps.h5``) holding one dataset, or one dataset of a file picked as ilastik and many
tools write it, ``maps.h5:/group/dataset``. The dataset comes back unread, as an ``h5py.Dataset``: the run
layer slices it (:class:`~peakloc.ops.lazy.Maps`), chunk by chunk where it is chunked and by hyperslab where
it is contiguous. Nothing outside the file is read: an external link, external storage or a virtual dataset
built from other files is refused, as is a dataset whose compression filter this installation lacks (it
would fail half-way through a run).
"""

from __future__ import annotations

import re
from functools import cache

from ..errors import InputError

SUFFIXES = frozenset({".h5", ".hdf5", ".hdf"})
#: ilastik's ``axistags`` keys -> peakloc's axis letters; other keys are batch axes of unknown kind.
AXISTAGS = {"t": "T", "c": "C", "z": "Z", "y": "Y", "x": "X"}
#: The first bytes of every HDF5 file (at offset 0, 512, 1024, ... where a user block comes first).
SIGNATURE = b"\x89HDF\r\n\x1a\n"
_SELECTOR = re.compile(r"^(?P<file>.*\.(?:h5|hdf5|hdf)):(?P<dataset>[^:]*)$", re.IGNORECASE)


def split_selector(path: str) -> tuple[str, str | None]:
    """``(file, dataset)`` of an input: ``"a.h5:/g/d"`` names dataset ``/g/d`` of ``a.h5``.

    Examples
    --------
    >>> split_selector("run/a.h5:/exported_data"), split_selector("a.HDF5:g/d"), split_selector("a.h5")
    (('run/a.h5', '/exported_data'), ('a.HDF5', '/g/d'), ('a.h5', None))
    >>> split_selector("C:/data/a.png")
    ('C:/data/a.png', None)
    """
    found = _SELECTOR.match(str(path))
    if found is None:
        return str(path), None
    dataset = found["dataset"]
    return found["file"], "/" + dataset.lstrip("/") if dataset.strip("/") else None


@cache
def _h5py():
    """h5py, with hdf5plugin's filters registered where it is installed (looked for once per process)."""
    try:
        import h5py
    except ImportError:
        raise InputError("HDF5 files need the h5py package: pip install 'peakloc[hdf5]'") from None
    try:  # registers the filters it bundles (Blosc, LZ4, Zstd, bitshuffle...), where it is installed
        import hdf5plugin  # noqa: F401
    except ImportError:
        pass
    return h5py


def _open(path):
    """The file, open for reading; :class:`InputError` in words for anything that is no readable HDF5 file."""
    h5py = _h5py()
    try:
        try:
            # Without file locking: a read needs none, and locks fail on read-only and many network file
            # systems (and where the writer, ilastik say, still holds the file).
            return h5py.File(path, "r", locking=False)
        except (TypeError, ValueError):  # an h5py or HDF5 too old to choose
            return h5py.File(path, "r")
    except OSError as exc:
        text = str(exc)
        if "truncated file" in text:
            raise InputError("truncated HDF5 file (shorter than its superblock says)") from None
        if "signature not found" in text or not _has_signature(path):
            raise InputError("not an HDF5 file (no HDF5 signature)") from None
        raise InputError(f"corrupt or unreadable HDF5 file ({text.splitlines()[0] if text else 'OSError'})") from None


def _has_signature(path) -> bool:
    try:
        with open(path, "rb") as handle:
            for offset in (0, 512, 1024, 2048, 4096):
                handle.seek(offset)
                if handle.read(8) == SIGNATURE:
                    return True
    except (OSError, TypeError):
        return False
    return False


def datasets_of(file) -> list[str]:
    """Every dataset reachable in ``file`` by its own (hard) links, as absolute paths, in the file's order."""
    h5py = _h5py()
    found: list[str] = []
    file.visititems(lambda name, node: found.append("/" + name) if isinstance(node, h5py.Dataset) else None)
    return found


def _external_links(h5py, file) -> list[str]:
    """``/link -> file:/path`` of each external link among the file's links (h5py 3.11 and later)."""
    found: list[str] = []
    visit = getattr(file, "visititems_links", None)
    if visit is not None:

        def note(name, link):
            if isinstance(link, h5py.ExternalLink):
                found.append(f"/{name} -> {link.filename}:{link.path}")

        visit(note)
    return found


def _listing(names: list[str], most: int = 8) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _inside(file, name: str, depth: int = 0):
    """The object at ``name``, each link on the way checked: soft links followed, external ones refused."""
    h5py = _h5py()
    if depth > 16:
        raise InputError(f"{name}: soft links nest too deep")
    parts = [p for p in name.split("/") if p]
    here = ""
    for k, part in enumerate(parts):
        here += "/" + part
        try:
            link = file.get(here, getlink=True)
        except (KeyError, RuntimeError, OSError, ValueError):
            link = None
        if link is None:
            raise InputError(f"no dataset {name} in the file; it holds: {_listing(datasets_of(file)) or 'none'}")
        if isinstance(link, h5py.ExternalLink):
            raise InputError(
                f"{here} is an external link to {link.filename}:{link.path}; peakloc reads only what is inside "
                "the file (name the other file instead)"
            )
        if isinstance(link, h5py.SoftLink):
            rest = "/".join(parts[k + 1 :])
            target = link.path if link.path.startswith("/") else here.rsplit("/", 1)[0] + "/" + link.path
            return _inside(file, target.rstrip("/") + ("/" + rest if rest else ""), depth + 1)
    return file[name] if parts else file


def _check(h5py, dataset, name: str) -> None:
    """Refuse what cannot be read as numbers from this file alone, here and now rather than mid-run."""
    dtype = dataset.dtype
    if dtype.kind not in "biuf":
        what = "strings" if dtype.kind in "SUO" else "compound records" if dtype.names else f"dtype {dtype}"
        raise InputError(f"dataset {name} holds {what}, not numbers")
    if dataset.external:
        raise InputError(f"dataset {name} keeps its data in other files (external storage); peakloc reads one file")
    if dataset.is_virtual and any(s.file_name != "." for s in dataset.virtual_sources()):
        raise InputError(f"dataset {name} is a virtual dataset mapped from other files; peakloc reads one file")
    plist = dataset.id.get_create_plist()
    for k in range(plist.get_nfilters()):
        code, _, _, label = plist.get_filter(k)
        if not h5py.h5z.filter_avail(code):
            label = label.decode(errors="replace") if isinstance(label, bytes) else str(label)
            raise InputError(
                f"dataset {name} is compressed with HDF5 filter {label or 'unnamed'} (id {code}), which this "
                "installation cannot decode (pip install hdf5plugin adds the common ones)"
            )


def read_hdf5(path, dataset: str | None = None):
    """The dataset of an HDF5 file (unread) and its axis letters from ilastik's ``axistags``, else None.

    ``dataset``: its path in the file; without it, the file must hold exactly one dataset.
    """
    h5py = _h5py()
    file = _open(path)
    if dataset is None:
        names = datasets_of(file)
        if not names:
            outside = _external_links(h5py, file)
            raise InputError(
                "HDF5 file holds no dataset"
                + (f" (only external links to other files: {_listing(outside)})" if outside else "")
            )
        if len(names) > 1:
            raise InputError(
                f"HDF5 file holds {len(names)} datasets: {_listing(names)}; pick one as FILE:/path/to/dataset"
            )
        dataset = names[0]
    node = _inside(file, dataset)
    if not isinstance(node, h5py.Dataset):
        inner = [dataset.rstrip("/") + n for n in datasets_of(node)] if isinstance(node, h5py.Group) else []
        raise InputError(f"{dataset} is a group, not a dataset; it holds: {_listing(inner) or 'no dataset'}")
    _check(h5py, node, dataset)
    if node.shape is None or len(node.shape) == 0:
        raise InputError(f"dataset {dataset} holds no array (shape {node.shape})")
    return node, axes_of(node)


def axes_of(dataset) -> str | None:
    """Axis letters from ilastik's ``axistags`` attribute (JSON, keys ``t z y x c``), or None.

    Examples
    --------
    >>> class D:
    ...     ndim = 4
    ...     attrs = {"axistags": '{"axes": [{"key": "z"}, {"key": "y"}, {"key": "x"}, {"key": "c"}]}'}
    >>> axes_of(D())
    'ZYXC'
    """
    tags = dataset.attrs.get("axistags") if hasattr(dataset, "attrs") else None
    if tags is None:
        return None
    import json  # here: 1.3 ms of every start otherwise

    try:
        text = tags.decode() if isinstance(tags, bytes) else str(tags)
        keys = [str(a["key"]).lower() for a in json.loads(text)["axes"]]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None  # tags that cannot be read are tags the defaults do without
    letters = "".join(AXISTAGS.get(k, "Q") for k in keys)
    if len(letters) != dataset.ndim or len(set(letters) - {"Q"}) != len(letters.replace("Q", "")):
        return None
    return letters


def element_size(path: str) -> dict[str, float]:
    """Voxel size per spatial letter from the dataset's ``element_size_um`` (ilastik, Fiji's HDF5 plugin).

    The sizes name the spatial axes in stored order (or every axis, one each).
    """
    filename, name = split_selector(path)
    node, letters = read_hdf5(filename, name)
    sizes = node.attrs.get("element_size_um")
    if sizes is None:
        return {}
    sizes = [float(s) for s in sizes]
    from .axes import default_axes

    letters = letters or default_axes(node.ndim)
    if len(sizes) == len(letters):
        return {a: s for a, s in zip(letters, sizes) if a in "ZYX"}
    spatial = [a for a in letters if a in "ZYX"]
    return dict(zip(spatial, sizes)) if len(sizes) == len(spatial) else {}
