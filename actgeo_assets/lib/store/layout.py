"""Where a run's files live on disk, and atomic writes.

One run directory per :meth:`RunSettings.run_id`-independent profile name keeps paths readable::

    {data_dir}/{profile}/
      raw/{shard}.npy            float32 [n, d] residual-stream rows (memory-mappable)
      raw/{shard}.json           sidecar: model, layer, dtype, shape, sha256, capture settings
      raw/{shard}.tokens.parquet token table: row, doc_id, position, token_id, token, char_start, char_end, source
      raw/{shard}.docs.parquet   the shard's documents: doc_id, source, text (for card contexts)
      raw/next_norm.npz          the next block's input-norm weight (for ``rmsnorm``)
      mean.npy                   float64 [d] mean over all shards (for ``center_l2``)
      mean.json                  its sha256 and the raw sha256 of every shard it averaged
      normalized/{shard}.npy     float32 [n, d] unit rows; normalized/{shard}.json diagnostics
      normalized/{shard}.kept.npy  bool [n_raw]: which raw rows were kept (the others are not finite or zero)
      tiles/{a}__{b}.npz         maximum spanning forest of one shard-pair tile
      tiles/{a}__{b}.json        the normalized sha256 it joined, its thresholds and its own sha256
      components/                forest.npz, labels.npy, offsets.json, summary.json, sweep.csv (every 0.01),
                                 scaling.csv, size_spectrum.png, percolation.png, n_scaling.png
      cards/                     cards.json, report.html, explorer.html
      index/                     neighbours.faiss (faiss IndexFlatIP of the unit rows), neighbours.json

Every file is written to a temporary name in the same folder and renamed into place, so a crash or a full
disk never leaves a half-written file under the final name (a full disk raises ``disk.DiskFullError`` naming
the file, the space it needed and what to free); its mode follows the process' umask (``0o666 & ~umask``),
like any file the process creates.

Integrity: each file a stage reads has its sha256 recorded by the stage that wrote it (in the sidecars
above). :func:`verify_file` checks a file against that record before it is read; it hashes a file once per
version (device, inode, size, modification and change times), so the planner and the stages that read
the same unchanged file do not hash it twice in one process. A mismatch raises :class:`IntegrityError`
naming the file; the planner (``lib/stages/plan.py``) treats it as stale so a plain rerun recomputes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from actgeo_assets.lib.store.disk import DiskFullError, disk_full_error, ensure_space, is_disk_full


def project_root() -> Path | None:
    """The source checkout this package runs from (the folder with ``pyproject.toml`` above the package, as
    `make` and ``pip install -e .`` use it), or None for an installed package (e.g. the Docker image)."""
    root = Path(__file__).resolve().parents[3]  # actgeo_assets/lib/store/layout.py
    return root if (root / "pyproject.toml").is_file() and (root / "actgeo_assets").is_dir() else None


def resolve_data_dir(data_dir: str | os.PathLike[str]) -> Path:
    """``data_dir`` as an absolute path: a relative one is taken from the project's root (so `actgeo run`,
    `make ui` and ``dagster asset materialize`` find the same files from any working directory), or, for an
    installed package, from the working directory (the Docker image's WORKDIR)."""
    path = Path(data_dir).expanduser()
    if not path.is_absolute():
        path = (project_root() or Path.cwd()) / path
    return path.resolve()


class RunLayout:
    """Paths of one run under ``data_dir``. Creates folders lazily on write."""

    def __init__(self, data_dir: str | os.PathLike[str], profile: str) -> None:
        self.root = resolve_data_dir(data_dir) / profile

    def raw(self, shard: str) -> Path:
        return self.root / "raw" / f"{shard}.npy"

    def raw_meta(self, shard: str) -> Path:
        return self.root / "raw" / f"{shard}.json"

    def tokens(self, shard: str) -> Path:
        return self.root / "raw" / f"{shard}.tokens.parquet"

    def docs(self, shard: str) -> Path:
        return self.root / "raw" / f"{shard}.docs.parquet"

    @property
    def next_norm(self) -> Path:
        return self.root / "raw" / "next_norm.npz"

    @property
    def mean(self) -> Path:
        return self.root / "mean.npy"

    def normalized(self, shard: str) -> Path:
        return self.root / "normalized" / f"{shard}.npy"

    @property
    def mean_meta(self) -> Path:
        return self.root / "mean.json"

    def normalized_meta(self, shard: str) -> Path:
        return self.root / "normalized" / f"{shard}.json"

    def kept(self, shard: str) -> Path:
        """bool [n_raw] mask of the raw rows that ``normalized/{shard}.npy`` holds, in order."""
        return self.root / "normalized" / f"{shard}.kept.npy"

    def shard_forest(self, shard: str) -> Path:
        """With ``prune_at``: a spanning forest of the shard's graph at ``>= prune_at`` (global row ids are
        added by the merge; stored shard-local), the known components its tiles start from."""
        return self.root / "normalized" / f"{shard}.forest.npz"

    def tile(self, pair: str) -> Path:
        return self.root / "tiles" / f"{pair}.npz"

    def tile_meta(self, pair: str) -> Path:
        return self.root / "tiles" / f"{pair}.json"

    @property
    def components_dir(self) -> Path:
        return self.root / "components"

    @property
    def forest(self) -> Path:
        """The merged single-linkage forest of all tiles (``SingleLinkageForest.save``)."""
        return self.components_dir / "forest.npz"

    @property
    def labels(self) -> Path:
        """int64 [N] canonical labels at the run's threshold, in global row order."""
        return self.components_dir / "labels.npy"

    @property
    def offsets(self) -> Path:
        """Global row offset and size of each shard, and N."""
        return self.components_dir / "offsets.json"

    @property
    def summary(self) -> Path:
        return self.components_dir / "summary.json"

    @property
    def sweep(self) -> Path:
        return self.components_dir / "sweep.csv"

    @property
    def scaling(self) -> Path:
        """Components over the first k shards (the N-scaling curve's table)."""
        return self.components_dir / "scaling.csv"

    def figure(self, name: str) -> Path:
        """A figure of the components, e.g. ``size_spectrum`` or ``percolation``."""
        return self.components_dir / f"{name}.png"

    @property
    def cards_dir(self) -> Path:
        return self.root / "cards"

    @property
    def cards(self) -> Path:
        return self.cards_dir / "cards.json"

    @property
    def report(self) -> Path:
        return self.cards_dir / "report.html"

    @property
    def members(self) -> Path:
        """Every activation of the run with its component: row, component, document, source, position, token
        (Parquet, one row per activation in global row order)."""
        return self.cards_dir / "members.parquet"

    @property
    def explorer(self) -> Path:
        """The interactive page of the run (``lib/outputs/explorer.py``), next to the report."""
        return self.cards_dir / "explorer.html"

    @property
    def layers_dir(self) -> Path:
        """The layer comparison's files (asset and job ``layers``, ``lib/stages/layers.py``)."""
        return self.root / "layers"

    def layers_file(self, name: str) -> Path:
        """One file of :attr:`layers_dir`: ``geometry.csv``/``geometry.parquet`` (layer x normalization x
        threshold), ``landing.csv``, ``giant_fraction.png``, ``section.html`` (the report's section) and
        ``layers.json`` (what was compared, and every file's sha256)."""
        return self.layers_dir / name

    @property
    def lookup_index(self) -> Path:
        """faiss IndexFlatIP of the N normalized rows in global row order (asset ``lookup``, `actgeo lookup`)."""
        return self.root / "lookup" / "neighbours.faiss"

    @property
    def lookup_meta(self) -> Path:
        """The index's sidecar: run, labels and normalized shards it was built from (sha256), rows, dim."""
        return self.root / "lookup" / "neighbours.json"

    @property
    def model_cache(self) -> Path:
        """Shared across profiles: converted models (e.g. the demo GGUF as an HF folder)."""
        return self.root.parent / "_models"

    @property
    def corpus_cache(self) -> Path:
        """Shared across profiles: downloaded archives and built corpora."""
        return self.root.parent / "_corpus"

    @property
    def memory_file(self) -> Path:
        """Each `actgeo run` step's peak resident memory (step label -> ``MemoryPeak.to_dict()``)."""
        return self.root / "memory.json"

    @property
    def lock(self) -> Path:
        """The data directory's writer lock (``lib/store/lock.py``): one per ``data_dir``, for every profile."""
        return self.root.parent / ".actgeo.lock"


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], suffix: str = "", needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it onto ``final`` only if the block succeeds.

    ``needed``: the bytes the file will take, where the writer knows it: checked against the free space
    first. A write that fails because the filesystem is full (before or during the block) raises
    :class:`~actgeo_assets.lib.store.disk.DiskFullError` naming ``final``, the space and what to free; the
    temporary file is removed, so ``final`` keeps its previous finished version (or stays absent)."""
    final = Path(final)
    if needed is not None:
        ensure_space(final, needed)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix or final.suffix, dir=final.parent)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(final, 0, needed) from exc
        raise
    try:  # mkstemp makes the file 0600; give it the mode any other new file of this process gets
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except (OSError, RuntimeError) as exc:  # RuntimeError: faiss' write error
        if not is_disk_full(exc) or isinstance(exc, DiskFullError):
            raise
        written = tmp_path.stat().st_size if tmp_path.exists() else 0
        tmp_path.unlink(missing_ok=True)  # before measuring what is free: its blocks are not the run's to count
        raise disk_full_error(final, written, needed) from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Atomically write ``array`` as .npy (loadable with ``np.load(path, mmap_mode='r')``), after checking
    that its bytes are free (``DiskFullError`` before writing any)."""
    array = np.ascontiguousarray(array)
    with atomic_path(path, ".npy", needed=npy_bytes(array)) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def npy_bytes(array: np.ndarray) -> int:
    """The exact size of ``array`` as a .npy file written by ``np.save``: its header (format 1.0, or 2.0 when
    the header does not fit 1.0's) and its data."""
    header = np.lib.format.header_data_from_array_1_0(array)
    buf = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(buf, header)
    except ValueError:  # a header over 64 KiB (a very wide structured dtype)
        buf = io.BytesIO()
        np.lib.format.write_array_header_2_0(buf, header)
    return buf.tell() + int(array.nbytes)


def save_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    data = json.dumps(obj, indent=2, sort_keys=True, default=json_default).encode()
    with atomic_path(path, ".json", needed=len(data)) as tmp:
        tmp.write_bytes(data)


def save_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically write ``data`` (e.g. a PNG)."""
    with atomic_path(path, needed=len(data)) as tmp:
        tmp.write_bytes(data)


def save_parquet(path: str | os.PathLike[str], table: Any) -> None:
    """Atomically write a pandas DataFrame as Parquet (no index)."""
    with atomic_path(path, ".parquet") as tmp:
        table.to_parquet(tmp, index=False)


def save_csv(path: str | os.PathLike[str], table: Any) -> None:
    """Atomically write a pandas DataFrame as CSV without its index."""
    with atomic_path(path, ".csv") as tmp:
        table.to_csv(tmp, index=False)


def load_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text())


def current_umask() -> int:
    """The process' umask (read from /proc where possible: setting it to read it is not thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class IntegrityError(ValueError):
    """A file a stage reads is missing, unreadable, or differs from the sha256 recorded when it was written.
    The message names the file; ``path`` is it."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path} {problem}; rerun `actgeo run` to recompute it from its inputs")


#: sha256 of files already hashed in this process, by file version (see :func:`_version`).
_HASHES: dict[tuple[int, ...], str] = {}
_HASHES_MAX = 4096


def _version(st: os.stat_result) -> tuple[int, ...]:
    """What identifies one version of a file: any write changes its size or its change time (ctime, which
    no user call can set back), and a file renamed into place is a new inode."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, streamed (always read; the result is remembered for :func:`verify_file`)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        before = os.fstat(fh.fileno())
        while block := fh.read(chunk):
            h.update(block)
        after = os.fstat(fh.fileno())
    digest = h.hexdigest()
    if _version(before) == _version(after):  # not written to while it was read
        if len(_HASHES) >= _HASHES_MAX:
            _HASHES.clear()
        _HASHES[_version(after)] = digest
    return digest


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of ``path``, hashed at most once per version of the file in this process."""
    known = _HASHES.get(_version(os.stat(path)))
    return known if known is not None else sha256_file(path)


def verify_file(path: str | os.PathLike[str], expected: str | None) -> Path:
    """``path`` when its sha256 equals ``expected`` (recorded when it was written); else
    :class:`IntegrityError` naming the file: missing, unreadable, no hash recorded, or changed (truncated,
    overwritten, flipped bytes). Hashes each version of a file once per process (:func:`file_sha256`)."""
    path = Path(path)
    if not expected:
        raise IntegrityError(path, "has no recorded sha256 (written by an older actgeo or its sidecar is damaged)")
    try:
        got = file_sha256(path)
    except FileNotFoundError:
        raise IntegrityError(path, "is missing") from None
    except OSError as exc:
        raise IntegrityError(path, f"cannot be read ({exc.strerror or exc})") from None
    if got != expected:
        raise IntegrityError(path, f"is corrupted or was changed after it was written: sha256 {got[:12]}... "
                                   f"differs from the recorded {str(expected)[:12]}...")
    return path


def jsonable(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples -> lists, numpy scalars -> Python)."""
    return json.loads(json.dumps(obj, default=json_default, sort_keys=True))


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for what runs store: numpy scalars and arrays, paths, tuples and sets."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple | set):
        return list(obj)
    raise TypeError(f"not JSON-serializable: {type(obj).__name__}")
