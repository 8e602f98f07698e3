"""Datasets by name, and a user's own CSV.

Each standard benchmark is one :class:`DatasetSpec`. A file is resolved in this order:

1. ``$MOLADAPT_DATA_DIR/<filename>`` (tests and benchmarks point it at ``../shared/data``);
2. files bundled inside the package (``moladapt/bundled``: the demo datasets);
3. the download cache (``$MOLADAPT_CACHE_DIR/downloads``), else a download from the
   dataset's canonical public URL, verified against its checksum (where one is known) before it is kept.

Offline, step 3 fails within ``timeout`` seconds with a message that says where to put the
file — it never hangs.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import tarfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from moladapt.registry import Registry
from moladapt.utils import temp_sibling

CLASSIFICATION = "classification"
REGRESSION = "regression"


class DataError(ValueError):
    """Bad input data: the message names the file, and the row and column where known."""


@dataclass(frozen=True)
class DatasetSpec:
    """Where a benchmark lives and how to read it.

    ``task_columns=None`` means every column except ``smiles_column`` and ``exclude``.
    ``filter`` selects rows of a long-format file (``{column: value}``); ``split_column``
    names a column with a predefined train/valid/test split. ``checksum`` is
    ``"sha256:<hex>"`` or ``"md5:<hex>"`` of the file served at ``url``.
    """

    name: str
    filename: str
    smiles_column: str
    task_type: str
    metric: str
    citation: str
    url: str | None
    checksum: str | None = None
    task_columns: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    filter: tuple[tuple[str, str], ...] = ()
    split_column: str | None = None
    description: str = ""
    group: str = "moleculenet"
    download_name: str | None = None  # file name at the URL when it differs (e.g. not gzipped)
    # the name of a function in ARCHIVE_CONVERTERS that turns the downloaded archive
    # (download_name) into ``filename``; None: the served file is the data file (maybe (un)gzipped)
    convert: str | None = None


@dataclass
class LabeledData:
    """Molecules with a label matrix: ``labels[i, t]`` is molecule i's value for task t.

    ``rows`` are the 0-based data rows of the source file (header excluded), so every
    report can point a user back to the line of their file. ``predefined_split`` holds
    "train"/"valid"/"test" per molecule when the source defines one.
    """

    name: str
    smiles: list[str]
    labels: np.ndarray
    task_names: list[str]
    task_type: str
    source: str
    rows: np.ndarray
    predefined_split: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.smiles)

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    def fingerprint(self) -> str:
        """sha256 of the content a split is drawn from: the SMILES in order, the labels, the
        task names and type and the predefined split (a changed file changes the split)."""
        digest = hashlib.sha256()
        for part in (self.smiles, self.task_names, [self.task_type]):
            digest.update("\n".join(part).encode() + b"\0")
        labels = np.array(self.labels, dtype=np.float64)
        labels[np.isnan(labels)] = np.nan  # one NaN bit pattern, whatever the file's parser made
        digest.update(labels.tobytes() + str(labels.shape).encode())
        if self.predefined_split is not None:
            digest.update("\n".join(map(str, self.predefined_split)).encode())
        return digest.hexdigest()


def select_columns(data: LabeledData, columns: Sequence[str]) -> LabeledData:
    """``data`` restricted to the label ``columns`` (in that order) and to the molecules with a
    label in at least one of them; ``rows`` still point at the source file's lines."""
    missing = [c for c in columns if c not in data.task_names]
    if missing:
        raise DataError(f"{data.name}: no label column {', '.join(map(repr, missing))}; "
                        f"its columns are: {', '.join(data.task_names)}")
    y = np.asarray(data.labels)[:, [data.task_names.index(c) for c in columns]]
    keep = np.flatnonzero((~np.isnan(y)).any(axis=1))
    return dataclasses.replace(
        data, smiles=[data.smiles[i] for i in keep], labels=y[keep], task_names=list(columns),
        rows=np.asarray(data.rows)[keep],
        predefined_split=None if data.predefined_split is None else np.asarray(data.predefined_split)[keep],
        metadata={**data.metadata, "selected_columns": list(columns),
                  "molecules_without_a_selected_label": int(len(data) - len(keep))})


DATASETS: Registry[DatasetSpec] = Registry("dataset")

_DC = "https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/"
_MOLNET = "Wu et al., MoleculeNet: a benchmark for molecular machine learning, Chem. Sci. 2018"


def _add(spec: DatasetSpec) -> None:
    DATASETS.add(spec.name, spec)


_add(DatasetSpec("bbbp", "BBBP.csv", "smiles", CLASSIFICATION, "roc_auc",
                 f"Martins et al. 2012; {_MOLNET}", _DC + "BBBP.csv",
                 "md5:66286cb9e6b148bd75d80c870df580fb", ("p_np",),
                 description="blood-brain barrier penetration"))
_add(DatasetSpec("bace", "bace.csv.gz", "mol", CLASSIFICATION, "roc_auc",
                 f"Subramanian et al. 2016; {_MOLNET}", _DC + "bace.csv",
                 "md5:ba7f8fa3fdf463a811fa7edea8c982c2", ("Class",), download_name="bace.csv",
                 description="BACE-1 inhibition (binary)"))
_add(DatasetSpec("bace_pic50", "bace.csv.gz", "mol", REGRESSION, "rmse",
                 f"Subramanian et al. 2016; {_MOLNET}", _DC + "bace.csv",
                 "md5:ba7f8fa3fdf463a811fa7edea8c982c2", ("pIC50",), download_name="bace.csv",
                 description="BACE-1 pIC50"))
_add(DatasetSpec("clintox", "clintox.csv.gz", "smiles", CLASSIFICATION, "roc_auc",
                 f"Gayvert et al. 2016; {_MOLNET}", _DC + "clintox.csv.gz",
                 "md5:db4f2df08be8ae92814e9d6a2d015284", ("FDA_APPROVED", "CT_TOX"),
                 description="FDA approval and clinical-trial toxicity"))
_add(DatasetSpec("sider", "sider.csv.gz", "smiles", CLASSIFICATION, "roc_auc",
                 f"Kuhn et al. 2016; {_MOLNET}", _DC + "sider.csv.gz",
                 "md5:77c0ef421f7cc8ce963c5836c8761fd2",
                 description="27 side-effect system-organ classes"))
_add(DatasetSpec("tox21", "tox21.csv", "smiles", CLASSIFICATION, "roc_auc",
                 f"Tox21 Data Challenge 2014; {_MOLNET}", _DC + "tox21.csv.gz",
                 "md5:2882d69e70bba0fec14995f26787cc25",
                 exclude=("mol_id",), download_name="tox21.csv.gz",
                 description="12 nuclear-receptor and stress-response assays"))
_add(DatasetSpec("toxcast", "toxcast_data.csv.gz", "smiles", CLASSIFICATION, "roc_auc",
                 f"Richard et al. 2016; {_MOLNET}", _DC + "toxcast_data.csv.gz",
                 "md5:92911bbf9c1e2ad85231014859388cd6",
                 description="617 in-vitro high-throughput toxicity assays"))
_add(DatasetSpec("hiv", "HIV.csv.gz", "smiles", CLASSIFICATION, "roc_auc",
                 f"DTP AIDS antiviral screen; {_MOLNET}", _DC + "HIV.csv",
                 "md5:9ad10c88f82f1dac7eb5c52b668c30a7", ("HIV_active",), download_name="HIV.csv",
                 description="inhibition of HIV replication"))
_add(DatasetSpec("muv", "muv.csv.gz", "smiles", CLASSIFICATION, "roc_auc",
                 f"Rohrer & Baumann 2009; {_MOLNET}", _DC + "muv.csv.gz",
                 "md5:9c40bd41310991efd40f4d4868fa3ddf", exclude=("mol_id",),
                 description="17 maximum-unbiased-validation virtual-screening targets"))
_add(DatasetSpec("esol", "delaney-processed.csv", "smiles", REGRESSION, "rmse",
                 f"Delaney 2004; {_MOLNET}", _DC + "delaney-processed.csv",
                 "md5:0c90a51668d446b9e3ab77e67662bd1c",
                 ("measured log solubility in mols per litre",),
                 description="aqueous solubility (log mol/L)"))
_add(DatasetSpec("freesolv", "SAMPL.csv", "smiles", REGRESSION, "rmse",
                 f"Mobley & Guthrie 2014; {_MOLNET}", _DC + "SAMPL.csv", None, ("expt",),
                 description="hydration free energy (kcal/mol)"))
_add(DatasetSpec("lipophilicity", "Lipophilicity.csv", "smiles", REGRESSION, "rmse",
                 f"AstraZeneca deposition in ChEMBL; {_MOLNET}", _DC + "Lipophilicity.csv",
                 "md5:85a0e1cb8b38b0dfc3f96ff47a57f0ab", ("exp",),
                 description="octanol/water distribution coefficient (logD7.4)"))

# --- TDC ADMET benchmark group: one long-format file, one dataset per name -----------------
_TDC_CITATION = "Huang et al., Therapeutics Data Commons, NeurIPS Datasets and Benchmarks 2021"
_TDC = {
    "caco2_wang": (REGRESSION, "mae"), "hia_hou": (CLASSIFICATION, "roc_auc"),
    "pgp_broccatelli": (CLASSIFICATION, "roc_auc"), "bioavailability_ma": (CLASSIFICATION, "roc_auc"),
    "lipophilicity_astrazeneca": (REGRESSION, "mae"), "solubility_aqsoldb": (REGRESSION, "mae"),
    "bbb_martins": (CLASSIFICATION, "roc_auc"), "ppbr_az": (REGRESSION, "mae"),
    "vdss_lombardo": (REGRESSION, "spearman"), "cyp2c9_veith": (CLASSIFICATION, "auprc"),
    "cyp2d6_veith": (CLASSIFICATION, "auprc"), "cyp3a4_veith": (CLASSIFICATION, "auprc"),
    "cyp2c9_substrate_carbonmangels": (CLASSIFICATION, "auprc"),
    "cyp2d6_substrate_carbonmangels": (CLASSIFICATION, "auprc"),
    "cyp3a4_substrate_carbonmangels": (CLASSIFICATION, "roc_auc"),
    "half_life_obach": (REGRESSION, "spearman"), "clearance_hepatocyte_az": (REGRESSION, "spearman"),
    "clearance_microsome_az": (REGRESSION, "spearman"), "ld50_zhu": (REGRESSION, "mae"),
    "herg": (CLASSIFICATION, "roc_auc"), "ames": (CLASSIFICATION, "roc_auc"),
    "dili": (CLASSIFICATION, "roc_auc"),
}
for _name, (_type, _metric) in _TDC.items():
    _add(DatasetSpec(
        f"tdc_{_name}", "tdc_admet_group.csv.gz", "Drug", _type, _metric, _TDC_CITATION,
        url=None, task_columns=("Y",), filter=(("dataset", _name),), split_column="split",
        group="tdc_admet",
        description=f"TDC ADMET group: {_name} (predefined train/valid/test split as published, "
        "called scaffold-based by its source but not verified as TDC's official partition: some "
        "SMILES occur in train and in test; build the file with "
        "moladapt.data.sources.build_tdc_admet_csv)",
    ))

FSMOL = DatasetSpec(
    "fsmol", "fsmol.csv.gz", "smiles", CLASSIFICATION, "delta_auprc",
    "Stanley et al., FS-Mol: A Few-Shot Learning Dataset of Molecules, NeurIPS 2021",
    url="https://figshare.com/ndownloader/files/31345321", checksum=None,
    group="fsmol", download_name="fsmol.tar", convert="fsmol_archive",
    description="ChEMBL assays as few-shot tasks (5,135 in FS-Mol's release) with its train/valid/test task split "
    "(long format; use moladapt.data.tasks.load_fsmol_tasks)",
)
_add(FSMOL)


# --- file resolution and download ---------------------------------------------------------
def data_dirs() -> list[Path]:
    """Directories searched for dataset files, in order."""
    dirs = []
    if os.environ.get("MOLADAPT_DATA_DIR"):
        dirs.append(Path(os.environ["MOLADAPT_DATA_DIR"]))
    dirs.append(Path(str(resources.files("moladapt") / "bundled")))
    from moladapt.data.cache import default_cache_dir

    dirs.append(default_cache_dir() / "downloads")
    return dirs


def resolve_file(spec: DatasetSpec, download: bool = True, timeout: float = 30.0) -> Path:
    """The local path of ``spec``'s file, downloading it if no local copy exists."""
    for d in data_dirs():
        candidate = d / spec.filename
        if candidate.exists():
            return candidate
    if not download or spec.url is None:
        raise FileNotFoundError(
            f"dataset {spec.name!r}: {spec.filename} not found in "
            f"{', '.join(str(d) for d in data_dirs())}"
            + ("" if spec.url else " and it has no direct download URL")
            + f". Put the file in one of these directories (or set MOLADAPT_DATA_DIR). {spec.description}"
        )
    target = data_dirs()[-1] / spec.filename
    if spec.convert is not None:
        archive = target.with_name(spec.download_name or f"{spec.filename}.download")
        if not archive.exists():
            try:
                download_file(spec.url, archive, spec.checksum, timeout=timeout)
            except ConnectionError as exc:
                raise ConnectionError(
                    f"could not download {spec.url} ({exc.__cause__ or exc}). If this machine is "
                    f"offline, download that archive elsewhere and put it at {archive} (it is "
                    f"converted on the next run), or put a converted {spec.filename} in "
                    "$MOLADAPT_DATA_DIR") from exc
        ARCHIVE_CONVERTERS[spec.convert](archive, target)
        archive.unlink()  # the data file holds what is used; the archive can be GBs
        return target
    served_gz = (spec.download_name or spec.filename).endswith(".gz")
    download_file(spec.url, target, spec.checksum, timeout=timeout,
                  gzip_after=spec.filename.endswith(".gz") and not served_gz,
                  gunzip_after=served_gz and not spec.filename.endswith(".gz"))
    return target


def file_checksum(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_file(url: str, target: Path, checksum: str | None, timeout: float = 30.0,
                  gzip_after: bool = False, gunzip_after: bool = False) -> Path:
    """Download ``url`` to ``target`` atomically, verifying ``checksum`` first.

    ``checksum`` (``"sha256:…"`` / ``"md5:…"``) is of the bytes served. ``url`` may be a
    ``file://`` URL (how the tests exercise this path offline). Raises ``ConnectionError``
    with instructions when the network is unreachable, ``DataError`` on a checksum mismatch.
    ``gzip_after`` / ``gunzip_after`` (de)compress the verified bytes so that ``target``'s
    name (``.gz`` or not) says what it holds.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_sibling(target, suffix=".part")
    except OSError as exc:
        raise DataError(
            f"cannot write the download cache {target.parent} ({exc.strerror or exc}); set "
            "MOLADAPT_CACHE_DIR to a writable folder, or put the file in $MOLADAPT_DATA_DIR"
        ) from None
    os.close(fd)
    conv_tmp = tmp + ".conv"
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
                shutil.copyfileobj(resp, out, 1 << 20)
                announced = resp.headers.get("Content-Length")
                received = out.tell()
            # a server that closes early ends the read without an error: count the bytes
            if announced is not None and announced.isdigit() and int(announced) != received:
                raise ConnectionError(f"the transfer stopped after {received} of {announced} bytes")
        except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException) as exc:
            raise ConnectionError(
                f"could not download {url} ({exc}). If this machine is offline, download the "
                f"file elsewhere and put it at {target} or in $MOLADAPT_DATA_DIR."
            ) from exc
        if checksum:
            algorithm, _, expected = checksum.partition(":")
            actual = file_checksum(Path(tmp), algorithm)
            if actual != expected:
                raise DataError(
                    f"checksum mismatch for {url}: expected {algorithm} {expected}, got {actual}; "
                    "the file was not kept"
                )
        if gzip_after or gunzip_after:
            try:
                with (gzip.open(tmp, "rb") if gunzip_after else open(tmp, "rb")) as src, \
                        (open(conv_tmp, "wb") if gunzip_after else gzip.open(conv_tmp, "wb")) as dst:
                    shutil.copyfileobj(src, dst)
            except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
                raise DataError(f"{url} is not a complete gzip file ({exc}); the file was not kept") from None
            os.replace(conv_tmp, tmp)
        os.replace(tmp, target)
    finally:
        for leftover in (tmp, conv_tmp):
            if os.path.exists(leftover):
                os.unlink(leftover)
    return target


FSMOL_COLUMNS = ("split", "task_id", "smiles", "label", "assay_id", "regression_value",
                 "log_regression_value", "relation", "assay_type")
_FSMOL_FOLDS = ("train", "valid", "test")


def build_fsmol_csv(archive: Path, target: Path) -> Path:
    """FS-Mol's published archive → ``fsmol.csv.gz``, the long format moladapt reads.

    The archive (a tar, maybe compressed) holds ``<fold>/<task id>.jsonl.gz`` with one JSON
    record per molecule (``SMILES``, ``Property``, ``Assay_ID``, ``RegressionProperty``,
    ``LogRegressionProperty``, ``Relation``, ``AssayType``, plus precomputed graphs and
    fingerprints, which are dropped). Rows are sorted by fold (train, valid, test), then task
    id, in file order within a task: the layout of ``$MOLADAPT_DATA_DIR/fsmol.csv.gz``.
    The archive is read once, front to back (a compressed tar cannot seek cheaply); each
    task's rows are kept as CSV text (tens of MB for FS-Mol) until all are sorted.
    """
    pattern = re.compile(r"(?:^|/)(train|valid|test)/([^/]+)\.jsonl\.gz$")
    tasks: dict[tuple[int, str], str] = {}
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                match = pattern.search(member.name)
                if not (member.isfile() and match):
                    continue
                fold, task_id = _FSMOL_FOLDS.index(match.group(1)), match.group(2)
                tasks[(fold, task_id)] = _fsmol_task_rows(tar.extractfile(member), archive, member.name,
                                                          _FSMOL_FOLDS[fold], task_id)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{archive}: not a readable FS-Mol archive ({exc})") from None
    if not tasks:
        raise DataError(f"{archive}: no <fold>/<task>.jsonl.gz files inside; is it FS-Mol's archive?")
    fd, tmp = temp_sibling(target)
    try:
        with os.fdopen(fd, "wb") as raw, gzip.open(raw, "wt", newline="") as text:
            csv.writer(text).writerow(FSMOL_COLUMNS)
            for key in sorted(tasks):
                text.write(tasks[key])
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _fsmol_task_rows(fileobj, archive: Path, member: str, fold: str, task_id: str) -> str:
    """One task file's records as CSV rows (text)."""
    out = io.StringIO()
    writer = csv.writer(out)
    with gzip.open(fileobj, "rt") as lines:
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                writer.writerow((fold, task_id, rec["SMILES"], int(float(rec["Property"])),
                                 rec.get("Assay_ID", task_id), rec.get("RegressionProperty", ""),
                                 rec.get("LogRegressionProperty", ""), rec.get("Relation", ""),
                                 rec.get("AssayType", "")))
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(f"{archive}: {member} line {n}: not an FS-Mol record ({exc!r})") from None
    return out.getvalue()


#: converters named by ``DatasetSpec.convert``: (downloaded archive, data file) -> data file
ARCHIVE_CONVERTERS = {"fsmol_archive": build_fsmol_csv}


# --- reading -------------------------------------------------------------------------------
def _open_text(path: Path):
    return (gzip.open if path.suffix == ".gz" else open)(path, "rt", errors="replace")


def _leading_blank_lines(path: Path) -> int:
    """How many empty lines come before the header (pandas would take the first for it)."""
    n = 0
    try:
        with _open_text(path) as fh:
            for line in fh:
                if line.strip():
                    break
                n += 1
    except (OSError, EOFError):
        return 0
    return n


def separator_hint(header: str) -> str:
    """A hint when a header line is split by ';', tab or '|' rather than commas."""
    sep = max((";", "\t", "|"), key=header.count)
    if header.count(sep) > header.count(","):
        return f" (the header is separated by {sep!r}: moladapt reads comma-separated files)"
    return ""


def _header_separator_hint(path: Path) -> str:
    try:
        with _open_text(path) as fh:
            header = next((line for line in fh if line.strip()), "")
    except (OSError, EOFError):
        return ""
    return separator_hint(header)


def find_smiles_column(source: str | Path, columns: Sequence[str], requested: str | None = None,
                       candidates: Sequence[str] = ("smiles",),
                       advice: str = "name it with --smiles-column") -> str:
    """The SMILES column of a file (``columns``: its header).

    ``requested`` (``--smiles-column``) is taken as given. Otherwise the first of
    ``candidates`` the file has, else the one column whose name is one of them in another case
    (``SMILES``, ``Smiles``). None found, or two in other cases: an error naming the file,
    its columns and ``advice``.
    """
    columns = [str(c) for c in columns]
    wanted = [requested] if requested is not None else list(candidates)
    for name in wanted:
        if name in columns:
            return name
    folded = {c.casefold() for c in wanted}
    matches = [c for c in columns if c.casefold() in folded]
    if requested is None and len(matches) == 1:
        return matches[0]
    what = (repr(requested) if requested is not None else
            " or ".join(map(repr, wanted)) + " in any case"
            + (f" ({matches} all match)" if matches else "") + f"; {advice}")
    raise DataError(f"{source}: no SMILES column {what}; the columns are {columns[:20]}"
                    f"{separator_hint(columns[0]) if len(columns) == 1 else ''}")


def _read_csv(path: Path, **kwargs) -> pd.DataFrame:
    """``pd.read_csv`` with its failures as :class:`DataError` messages that name the file."""
    try:
        return pd.read_csv(path, **kwargs)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except UnicodeDecodeError as exc:  # its offset counts from the parser's chunk, not the file
        raise DataError(f"{path}: not UTF-8 text (it holds byte {exc.object[exc.start:exc.start + 1]!r}, "
                        "e.g. from Latin-1 or an Excel export); save the file as UTF-8 CSV "
                        "(Excel: 'CSV UTF-8')") from None
    except (pd.errors.ParserError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc}){_header_separator_hint(path)}") from None


def csv_header(path: str | Path) -> list[str]:
    """The column names of a CSV or CSV.gz (its first non-blank line), no rows read."""
    path = Path(path)
    return [str(c) for c in _read_csv(path, nrows=0, skiprows=_leading_blank_lines(path)).columns]


def _read_table(path: Path, keep_blank_lines: bool = False, as_text: bool = False) -> pd.DataFrame:
    """The CSV at ``path``; ``keep_blank_lines``: an empty line is a row of empty cells (so
    row i of the frame is line i + 2 of the file), not skipped; ``as_text``: every cell as the
    file spells it (columns passed through to an output stay as they were: ids stay ``1``,
    not ``1.0``)."""
    text = {"dtype": str, "keep_default_na": False} if as_text else {}
    # kept blank lines are rows, but blank lines above the header are not: they are skipped
    # and counted in frame.attrs["leading_blank_lines"] (data row i is then line lead + i + 2)
    lead = _leading_blank_lines(path) if keep_blank_lines else 0
    frame = _read_csv(path, low_memory=False, skip_blank_lines=not keep_blank_lines,
                      skiprows=lead, **text)
    if frame.empty:
        raise DataError(f"{path}: the file has a header but no data rows")
    frame.attrs["leading_blank_lines"] = lead
    header = [str(c) for c in pd.read_csv(path, header=None, nrows=1).iloc[0].tolist()]
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:  # pandas would rename the second one 'name.1' and train on both
        raise DataError(f"{path}: the header names column(s) {repeated} more than once; "
                        "give every column its own name")
    return frame


def _labels_matrix(frame: pd.DataFrame, columns: Sequence[str], path: Path,
                   rows: np.ndarray) -> np.ndarray:
    """Numeric ``[M, T]`` labels; empty cells → NaN; anything else non-numeric → DataError."""
    out = np.empty((len(frame), len(columns)), dtype=np.float32)
    for j, col in enumerate(columns):
        raw = frame[col]
        values = pd.to_numeric(raw, errors="coerce")
        bad = values.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"{path}: column {col!r} has a non-numeric label {raw.iloc[i]!r} at row "
                f"{int(rows[i]) + 2} (line in the file, header = line 1); "
                f"{int(bad.sum())} such value(s) in total"
            )
        out[:, j] = values.to_numpy(dtype=np.float32)
        infinite = np.isinf(out[:, j])  # inf itself, or beyond float32 (e.g. 1e40)
        if infinite.any():
            i = int(np.flatnonzero(infinite)[0])
            raise DataError(
                f"{path}: column {col!r} has a label that is infinite or too large for float32, "
                f"{str(raw.iloc[i])!r} at row {int(rows[i]) + 2} (line in the file, header = line 1); "
                f"{int(infinite.sum())} such value(s) in total"
            )
    return out


def infer_task_type(labels: np.ndarray) -> str:
    present = labels[~np.isnan(labels)]
    return CLASSIFICATION if present.size and np.isin(present, (0.0, 1.0)).all() else REGRESSION


REGRESSION_ADVICE = (" (regression labels? give the task type regression: --task-type regression, "
                     "task_type='regression' in Python)")


def check_classification_labels(labels: np.ndarray, task_names: Sequence[str], source: str,
                                strict: bool = True) -> list[str]:
    """Validate binary labels; return (or, with ``strict``, raise on) one-class tasks."""
    single = []
    for j, name in enumerate(task_names):
        col = labels[:, j]
        present = col[~np.isnan(col)]
        odd = present[~np.isin(present, (0.0, 1.0))]
        if odd.size:
            raise DataError(
                f"{source}: task {name!r} is classification but has label values "
                f"{[float(f'{v:.6g}') for v in sorted(set(odd.tolist()))[:5]]}; expected 0/1"
                + REGRESSION_ADVICE
            )
        if np.unique(present).size < 2:
            single.append(name)
    if single and strict:
        detail = ", ".join(
            f"{n!r} ({int((~np.isnan(labels[:, task_names.index(n)])).sum())} labels, "
            f"all {labels[~np.isnan(labels[:, task_names.index(n)]), task_names.index(n)][:1].tolist() or 'missing'})"
            for n in single[:5]
        )
        raise DataError(
            f"{source}: classification task(s) with only one class cannot be learned or "
            f"scored: {detail}. Drop these columns or add labels of the other class."
        )
    return single


def check_label_matrix(labels: np.ndarray, task_names: Sequence[str], source: str,
                       task_type: str | None = None, strict: bool = True) -> tuple[str, list[str]]:
    """Validate a ``[M, T]`` label matrix (NaN = unmeasured); return ``(task type, one-class
    tasks)``. ``task_type=None`` infers classification from 0/1 labels, and refuses columns of
    two other whole numbers (−1/1, 1/2: binary labels meant as classes, which would silently
    train a regressor). With ``strict``, a column without labels and a one-class task are errors."""
    if strict:
        empty = [c for j, c in enumerate(task_names) if np.isnan(labels[:, j]).all()]
        if empty:
            raise DataError(f"{source}: column(s) {empty} have no labels (every cell is empty)")
    if task_type is None:
        task_type = infer_task_type(labels)
        for j, name in enumerate(task_names if task_type == REGRESSION else ()):
            values = np.unique(labels[~np.isnan(labels[:, j]), j])
            if values.size == 2 and np.all(values == np.round(values)):
                regression_type = "task type regression (--task-type regression; task_type='regression' in Python)"
                if values[0] == 0 and values[1] == 1:  # 0/1 here, so another column made it regression
                    raise DataError(
                        f"{source}: column {name!r} holds 0/1 class labels, but other label columns "
                        "hold numbers: one model learns one task type; train the classification and "
                        f"the regression columns as separate models, or give the {regression_type} "
                        "to treat the 0/1 column as numbers")
                raise DataError(
                    f"{source}: column {name!r} holds only the values {values[0]:g} and {values[1]:g}: "
                    f"binary labels must be 0/1 for classification; map them to 0/1, or give the "
                    f"{regression_type} to treat them as numbers")
    if task_type not in (CLASSIFICATION, REGRESSION):
        raise DataError(f"task_type must be {CLASSIFICATION!r} or {REGRESSION!r}, got {task_type!r}")
    one_class = []
    if task_type == CLASSIFICATION:
        one_class = check_classification_labels(labels, list(task_names), source, strict)
    return task_type, one_class


def names_a_file(spec: str | Path) -> bool:
    """Whether a dataset argument names a user's file rather than a registered dataset: a
    ``.csv`` / ``.gz`` name (a missing one then fails as a missing file, not an unknown
    name) or an existing file."""
    path = Path(str(spec).strip())
    return path.suffix.lower() in (".csv", ".gz") or path.is_file()


TASK_CSV_LAYOUT = ("A task CSV holds a 'smiles' column (any case) and binary task columns only "
                   "(0/1, empty = unmeasured): drop id, text and numeric-value columns from it")


def load_task_csv(path: str | Path) -> LabeledData:
    """A user's table of binary tasks (an assay panel): few-shot tasks, or one multi-task run.

    The SMILES column is found in any case; every other column is a 0/1 task (empty =
    unmeasured). Tasks with one class are kept and listed in ``metadata["one_class_tasks"]``:
    the caller decides (few-shot leaves them out, metrics skip them).
    """
    path = Path(path)
    smiles = find_smiles_column(path, csv_header(path), advice=TASK_CSV_LAYOUT)
    return load_csv(path, smiles, task_type=CLASSIFICATION, strict=False, layout_hint=TASK_CSV_LAYOUT)


def load_csv(
    path: str | Path,
    smiles_column: str = "smiles",
    target_columns: Sequence[str] | None = None,
    task_type: str | None = None,
    name: str | None = None,
    exclude: Sequence[str] = (),
    strict: bool = True,
    layout_hint: str | None = None,
) -> LabeledData:
    """Read a user's CSV/CSV.gz of SMILES and one or many label columns.

    NaN / empty cells are unmeasured labels. ``target_columns=None`` takes every column
    but the SMILES column and ``exclude``; ``task_type=None`` infers classification when
    every label is 0/1. Raises :class:`DataError` naming the file, row and column; with
    ``strict=False`` one-class classification tasks are listed in
    ``metadata["one_class_tasks"]`` instead of refused (for scoring, where they are skipped).
    ``layout_hint`` is added to errors about the columns and labels (not to those about
    reading the file), e.g. the layout a caller needs.
    """
    path = Path(path)
    # blank lines are read as rows and then dropped, so that row i keeps pointing at line
    # i + 2 of the file in every message (skipping them while reading shifts every row below)
    frame = _read_table(path, keep_blank_lines=True)
    filled = np.flatnonzero(frame.notna().any(axis=1).to_numpy())
    if filled.size == 0:
        raise DataError(f"{path}: the file has a header but no data rows")
    rows = filled + frame.attrs["leading_blank_lines"]
    frame = frame.iloc[filled].reset_index(drop=True)
    try:
        return _from_frame(frame, path, smiles_column, target_columns, task_type,
                           name or path.name.split(".")[0], rows, exclude, strict=strict)
    except DataError as exc:
        if layout_hint:  # the caller's layout, not a task type the user could choose
            raise DataError(f"{str(exc).replace(REGRESSION_ADVICE, '')}. {layout_hint}") from None
        raise


def _from_frame(frame: pd.DataFrame, path: Path, smiles_column: str,
                target_columns: Sequence[str] | None, task_type: str | None, name: str,
                rows: np.ndarray, exclude: Sequence[str] = (), strict: bool = True) -> LabeledData:
    columns = list(frame.columns)
    if smiles_column not in columns:
        hint = separator_hint(str(columns[0])) if len(columns) == 1 else ""
        raise DataError(
            f"{path}: no SMILES column {smiles_column!r}; the columns are {columns[:20]}{hint}"
        )
    inferred_targets = target_columns is None
    if inferred_targets:
        target_columns = [c for c in columns if c != smiles_column and c not in exclude]
        unnamed = [c for c in target_columns if str(c).startswith("Unnamed: ")]
        if unnamed:
            raise DataError(f"{path}: column(s) {unnamed} have no header name (a saved pandas index?); "
                            "drop them or name the label columns (--target-columns)")
    missing = [c for c in target_columns if c not in columns]
    if missing:
        raise DataError(f"{path}: unknown target column(s) {missing}; the columns are {columns[:20]}")
    repeated = sorted({c for c in target_columns if list(target_columns).count(c) > 1})
    if repeated:  # one task learned twice, and task names must tell the tasks apart
        raise DataError(f"{path}: target column(s) {repeated} named more than once")
    if not target_columns:
        raise DataError(f"{path}: no target columns")
    labels = _labels_matrix(frame, target_columns, path, rows)
    task_type, one_class = check_label_matrix(labels, list(target_columns), str(path), task_type, strict)
    smiles = frame[smiles_column].astype(str).where(frame[smiles_column].notna(), "").tolist()
    return LabeledData(name=name, smiles=[s.strip() for s in smiles], labels=labels,
                       task_names=list(target_columns), task_type=task_type, source=str(path),
                       rows=rows, metadata={"one_class_tasks": one_class, "smiles_column": smiles_column})


def load_dataset(name: str, download: bool = True) -> LabeledData:
    """Load a benchmark by name (see ``moladapt datasets``)."""
    spec = DATASETS.get(name.lower())
    if spec.group == "fsmol":
        raise DataError(f"{name!r} is a collection of {spec.description.split(' as ')[0]}, not one table: "
                        "load it with moladapt.data.tasks.load_fsmol_tasks(split)")
    path = resolve_file(spec, download=download)
    frame = _read_table(path)
    keep = np.ones(len(frame), dtype=bool)
    for column, value in spec.filter:
        keep &= (frame[column] == value).to_numpy()
    rows = np.flatnonzero(keep)
    frame = frame.iloc[rows].reset_index(drop=True)
    # A named benchmark is used as published: report one-class tasks rather than refuse them.
    data = _from_frame(frame, path, spec.smiles_column, spec.task_columns, spec.task_type,
                       spec.name, rows,
                       exclude=tuple(spec.exclude) + tuple(c for c, _ in spec.filter)
                       + ((spec.split_column,) if spec.split_column else ()),
                       strict=False)
    if spec.split_column:
        data.predefined_split = frame[spec.split_column].astype(str).to_numpy()
    data.metadata.update(spec=spec.name, citation=spec.citation, metric=spec.metric)
    return data


def dataset_table() -> pd.DataFrame:
    """One row per registered dataset: name, group, task type, metric, file, where found."""
    records = []
    for name in DATASETS:
        spec = DATASETS.get(name)
        try:
            where = str(resolve_file(spec, download=False))
        except FileNotFoundError:
            where = f"not local (download: {spec.url or 'see description'})"
        records.append({"name": name, "group": spec.group, "task_type": spec.task_type,
                        "metric": spec.metric, "file": spec.filename, "location": where,
                        "description": spec.description})
    return pd.DataFrame.from_records(records)


# --- builders for derived files -----------------------------------------------------------
def build_tdc_admet_csv(target: Path) -> Path:
    """Build ``tdc_admet_group.csv.gz`` (long format) with PyTDC (``pip install PyTDC``).

    Columns: dataset, Drug_ID, Drug, Y, split — the layout ``load_dataset("tdc_*")`` reads.
    Needs network access to TDC's servers (PyTDC downloads and caches the files).
    """
    try:
        from tdc.benchmark_group import admet_group  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ImportError("building the TDC ADMET file needs PyTDC: pip install PyTDC") from exc
    group = admet_group(path=str(Path(target).parent / "tdc_cache"))
    frames = []
    for name in _TDC:
        bench = group.get(name)
        train, valid = group.get_train_valid_split(seed=1, benchmark=bench["name"], split_type="default")
        for part, frame in (("train", train), ("valid", valid), ("test", bench["test"])):
            frames.append(frame.assign(dataset=name, split=part)[["dataset", "Drug_ID", "Drug", "Y", "split"]])
    out = pd.concat(frames, ignore_index=True)
    out.to_csv(target, index=False, compression="gzip")
    return Path(target)
