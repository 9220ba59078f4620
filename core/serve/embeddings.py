"""The embedding store of a run: one unit-length vector per photo of its split.csv, a 2-D map of
them, nearest neighbours and the kNN classifier (issues 22 and 23).

    compute(run)                 # a job ("embed"): embeddings.npy + embeddings.parquet in the run folder
    e = load(run)                # None until computed
    e.frame                      # path, split, target, label, name, pred, conf, correct, x, y (one row a vector)
    e.neighbours([3, 7], k=8)    # each query's nearest training photos (a row never returns itself)
    e.classify(vectors, k=10)    # kNN votes: predicted class, confidence, top classes
    stale(run)                   # computed on an older checkpoint

The vectors are the input of the model's head (core.serve.features), stored as float16 (half the
disk; cosine similarities move by ~1e-3). `pred`/`conf` come from the same forward pass (softmax of
the plain image, no mirror test-time augmentation and no temperature: what the network says of
exactly the image whose vector is stored). The photos are read from the run's prepared store, the
pixels training and evaluation fed the model (core.serve.features.run_images; issue 20).

Map: PCA to at most 50 dimensions, then t-SNE (scikit-learn) up to TSNE_MAX points, PCA-2 above
(t-SNE's cost grows as n log n with a large constant: minutes past 20,000 points on a CPU).
UMAP would be faster and keep more global structure, but is another dependency (numba) for a
picture; t-SNE from scikit-learn, already pinned, is enough.

Writing is atomic per file (temp + os.replace), the vectors first and the rows file last; the
rows file's metadata holds the vectors' SHA-256, so a reader that catches a new vectors file
beside the old rows (a compute finishing meanwhile) sees the mismatch and reads again. An
interrupted compute writes nothing: the previous complete pair stays, or none.

Search (issue 23: one query over 100,000 vectors in <= 20 ms on one CPU thread): an exact inner
product (faiss IndexFlatIP) reads every vector per query, ~85 ms at 100,000 x 1280 (docs/BENCHMARKS.md).
From IVF_MIN training photos up, compute also trains an inverted file over them (IndexIVFFlat,
nlist = 4 sqrt(n), nprobe the smallest power of two with recall@10 >= IVF_RECALL against the exact
search on the run's own vectors), written beside the vectors before the rows file; the rows file's
metadata names it ("index": "ivf nlist=... nprobe=...") with the index file's SHA-256, next to the
vectors'. A reader uses the stored index only when its hash is the one the (vector-checked) rows
name; otherwise, and below IVF_MIN, and for other sets of splits, the exact index as before.

Takes a run object (duck-typed: `.id`, `.checkpoint`, `.config()`, `.class_names()`,
`.split_file`, `.embeddings_file`, `.embedding_rows_file`, `.embedding_index_file`) and never imports
core.runs.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from core.errors import Cancelled, UserError
from core.files import atomic_output, atomic_write
from core.serve import features

TSNE_MAX = 20_000          # points: t-SNE up to this many, PCA-2 above
SMALL_MAP = 5_000         # points: a map smaller than this is drawn on one thread (see layout)
PCA_DIMS = 50              # PCA before t-SNE (the usual recipe: denoises and speeds it up)
K_NEIGHBOURS = 8           # neighbours shown per photo
K_CLASSIFY = 10            # training photos that vote in the kNN classifier
FEW_QUERIES = 64           # fewer queries than this are searched on one thread (see _search)
TOP = 5                    # classes kept per kNN answer (top-5 accuracy, the Classify table)
EXAMPLES = 5               # vanished photos named in the result
# Exact search reads n x D floats per query: ~85 ms at 100,000 x 1280 on one thread (BENCHMARKS, issue 23), so
# ~17 ms at 20,000 x 1280 (the goal: 20 ms) and 43 ms at 50,000. From here the train rows get an inverted file.
IVF_MIN = 20_000           # training vectors
IVF_SPLITS = ("train",)    # the splits the stored inverted file covers: those neighbours and the kNN vote search
IVF_RECALL = 0.99          # recall@K_CLASSIFY against the exact search that nprobe must reach
IVF_PROBES = 1_000         # queries (the run's own vectors) that measure it
META_KEY = b"landmarks.embeddings"     # the rows file's parquet metadata key
NEIGHBOUR_COLUMNS = ("path", "split", "label", "name", "similarity", "row")


# ------------------------------------------------------------------ computing

def compute(run, progress=None, should_stop=None) -> dict:
    """Embed every photo of the run's split.csv with its model; write vectors, rows and map.
    `progress(done, total)`; `should_stop()` True -> Cancelled, nothing written."""
    from core.data.splits import load_manifest
    from core.serve.predictor import load_predictor
    t0 = time.time()
    pred = load_predictor(run)                     # one sentence when there is no checkpoint
    if not run.split_file.exists():
        raise UserError(f"Run {run.id} has no split.csv, so there are no photos to embed; its folder is damaged.")
    manifest = load_manifest(run.split_file)
    source = {}

    def preparing(done, total):           # photos the store lacked, decoded into it first
        if should_stop and should_stop():
            raise Cancelled()
        if progress:
            progress(done, total)
    batches = features.run_images(pred.cfg, manifest["path"].tolist(), progress, preparing, source=source)
    vectors, answer, conf, ok = forward_batches(pred.model, batches, len(manifest), should_stop)
    missing = manifest["path"][~ok].tolist()
    if not ok.any():
        raise UserError(f"None of run {run.id}'s {len(manifest)} photos can be read any more; restore its data set "
                        "folder and embed again.")
    rows = manifest[ok].reset_index(drop=True)[["path", "split", "target", "label"]]
    names = dict(zip(pred.labels, pred.names))
    rows["name"] = rows["label"].map(lambda l: names.get(str(l), str(l)))
    rows["pred"], rows["conf"] = answer, conf
    rows["correct"] = rows["pred"].to_numpy() == rows["target"].to_numpy()
    if should_stop and should_stop():
        raise Cancelled()
    xy, how = layout(vectors)
    rows["x"], rows["y"] = xy[:, 0].astype(np.float32), xy[:, 1].astype(np.float32)
    if should_stop and should_stop():
        raise Cancelled()
    meta = {"run_id": run.id, "n": len(rows), "dim": int(vectors.shape[1]), "map": how,
            "checkpoint_mtime": pred.weights_mtime, "missing": len(missing), "missing_examples": missing[:EXAMPLES],
            "image_size": pred.cfg.image_size, "pixels": source.get("pixels"), "computed": time.time()}
    meta = write(run, vectors, rows, meta)
    return {"run_id": run.id, "n": len(rows), "dim": meta["dim"], "missing": len(missing),
            "missing_examples": missing[:EXAMPLES], "seconds": round(time.time() - t0, 2), "map": how,
            "index": meta["index"]}


def forward(model, paths: list, size: int, progress=None, should_stop=None):
    """forward_batches of photos decoded one by one (features.photo_batches): photos that are not a
    run's own; compute reads a run's from its prepared store (features.run_images)."""
    return forward_batches(model, features.photo_batches(paths, size, progress), len(paths), should_stop)


@torch.no_grad()
def forward_batches(model, batches, n: int, should_stop=None):
    """(unit vectors (n_ok, D) float32, predicted class (n_ok,) int64, its probability (n_ok,) float32,
    readable mask over the n photos) of `batches` ((indices, images) as features.run_images gives them):
    one forward per batch gives both the head's input (features.head_input) and the model's answer.
    Only the top class is kept per photo (never photos x classes)."""
    model.eval()
    vecs, preds, confs, ok = [], [], [], np.zeros(n, bool)
    for idx, x in batches:
        if should_stop and should_stop():
            raise Cancelled()
        with features.head_input(model) as grab:
            out = model(x)
        vecs.append(F.normalize(grab["x"].float().flatten(1), dim=1).numpy())
        conf, pred = torch.softmax(out.float(), 1).max(1)
        preds.append(pred.numpy().astype(np.int64))
        confs.append(conf.numpy().astype(np.float32))
        ok[idx] = True                        # the others vanished or are damaged since training: counted
    if not vecs:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32), ok
    return np.concatenate(vecs), np.concatenate(preds), np.concatenate(confs), ok


def layout(vectors: np.ndarray) -> tuple[np.ndarray, str]:
    """2-D coordinates of the vectors and how they were made ("tsne" or "pca")."""
    from sklearn.decomposition import PCA
    n, d = vectors.shape
    if n < 3:
        return np.zeros((n, 2), np.float32), "pca"
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits
    # Small maps on one thread: OpenMP's threads wait busily, and on a machine already busy (a training
    # next door) t-SNE of 240 points took 35 s with 2 threads against 1.6 s with one.
    with threadpool_limits(1 if n < SMALL_MAP else None):
        reduced = PCA(min(PCA_DIMS, n, d), random_state=0).fit_transform(vectors.astype(np.float32))
        if n > TSNE_MAX or n < 5:
            return np.pad(reduced[:, :2], ((0, 0), (0, max(0, 2 - reduced.shape[1])))), "pca"
        xy = TSNE(2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=0).fit_transform(reduced)
    return xy, "tsne"


def write(run, vectors: np.ndarray, rows: pd.DataFrame, meta: dict) -> dict:
    """Vectors first, then the inverted file (IVF_MIN training rows and up; else any old one removed), the
    rows (with both hashes and the index's name in their metadata) last; each atomically. Returns the
    metadata written."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    buf = io.BytesIO()
    np.save(buf, vectors.astype(np.float16))
    data = buf.getvalue()
    atomic_write(run.embeddings_file, data)
    meta = {**meta, "vectors_sha256": hashlib.sha256(data).hexdigest(), **write_index(run, data, rows)}
    table = pa.Table.from_pandas(rows, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(meta).encode()})
    with atomic_output(run.embedding_rows_file) as tmp:
        pq.write_table(table, tmp)
    return meta


def write_index(run, data: bytes, rows: pd.DataFrame) -> dict:
    """The inverted file of the IVF_SPLITS rows of the vectors file `data` (as load will read them back),
    written atomically; its metadata entries ({"index": name, "index_sha256": ...}), or {"index": "exact"}."""
    import faiss
    path = getattr(run, "embedding_index_file", None)
    picked = np.flatnonzero(np.isin(rows["split"].astype(str).to_numpy(), IVF_SPLITS))
    if path is None or len(picked) < IVF_MIN:
        if path is not None:
            path.unlink(missing_ok=True)          # an older, larger compute's: never paired with these rows
        return {"index": "exact"}
    vectors = _unit(np.load(io.BytesIO(data)).astype(np.float32))
    with _faiss_threads(1 if len(picked) < SMALL_MAP else None):     # as layout: busy-waiting threads
        index, name = build_ivf(vectors[picked], vectors)
    digest = hashlib.sha256()
    with atomic_output(path) as tmp:
        faiss.write_index(index, str(tmp))
        with open(tmp, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                digest.update(chunk)
    return {"index": name, "index_sha256": digest.hexdigest()}


def build_ivf(vectors: np.ndarray, probes: np.ndarray):
    """(IndexIVFFlat over `vectors` (unit, inner product), its name): nlist = 4 sqrt(n) (faiss's rule of
    thumb), nprobe the smallest power of two whose recall@K_CLASSIFY against the exact search, on up to
    IVF_PROBES of `probes` (the run's own vectors), is >= IVF_RECALL."""
    import faiss
    n, d = vectors.shape
    nlist = max(1, min(n, int(round(4 * np.sqrt(n)))))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.min_points_per_centroid = 1      # small lists are fine (and faiss would print a warning)
    index.cp.seed = 0
    index.train(vectors)
    index.add(vectors)
    rng = np.random.default_rng(0)
    queries = probes[rng.choice(len(probes), min(IVF_PROBES, len(probes)), replace=False)]
    exact = faiss.IndexFlatIP(d)
    exact.add(vectors)
    k = min(K_CLASSIFY, n)
    truth = exact.search(queries, k)[1]
    index.nprobe = 1
    while index.nprobe < nlist:
        found = index.search(queries, k)[1]
        hits = sum(len(np.intersect1d(a, b)) for a, b in zip(found, truth))
        if hits >= IVF_RECALL * truth.size:
            break
        index.nprobe = min(nlist, index.nprobe * 2)
    return index, f"ivf nlist={nlist} nprobe={index.nprobe}"


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors


# ------------------------------------------------------------------ reading

def metadata(run) -> dict | None:
    """The rows file's metadata (n, dim, map, checkpoint_mtime, missing...), or None when not computed."""
    import pyarrow.parquet as pq
    try:
        raw = (pq.read_schema(run.embedding_rows_file).metadata or {}).get(META_KEY)
        return json.loads(raw) if raw else None
    except (OSError, ValueError):
        return None


def stale(run) -> bool:
    """True when the embeddings were computed on another checkpoint than the run's current one
    (a resumed or retrained run); False when they are current or not computed at all."""
    meta = metadata(run)
    if meta is None:
        return False
    try:
        mtime = run.checkpoint.stat().st_mtime
    except OSError:
        return False
    return abs(meta.get("checkpoint_mtime", 0.0) - mtime) > 1e-3


def load(run) -> "Embeddings | None":
    """The run's embeddings, or None when they are not computed (or unreadable)."""
    import pyarrow.parquet as pq
    for _ in range(3):                      # a compute replacing the pair between two reads: read again
        meta = metadata(run)
        try:
            data = run.embeddings_file.read_bytes()
            frame = pq.read_table(run.embedding_rows_file).to_pandas()
        except (OSError, ValueError):
            return None
        if meta is not None and hashlib.sha256(data).hexdigest() == meta.get("vectors_sha256"):
            vectors = _unit(np.load(io.BytesIO(data)).astype(np.float32))
            return Embeddings(frame, vectors, meta, getattr(run, "embedding_index_file", None))
        time.sleep(0.05)
    return None


# ------------------------------------------------------------------ neighbours and kNN

@dataclass
class Votes:
    """The kNN classifier's answer for q queries: predicted class and confidence (the predicted
    class's best similarity), the TOP best classes (best first, -1 where fewer) with each one's
    best similarity, and the neighbours that voted (row indices, similarities; -1 / nan padded)."""
    pred: np.ndarray           # int64 (q,)
    conf: np.ndarray           # float64 (q,)
    top: np.ndarray            # int64 (q, TOP)
    top_sim: np.ndarray        # float64 (q, TOP)
    rows: np.ndarray           # int64 (q, k)
    sims: np.ndarray           # float32 (q, k)


def _search(index, vecs: np.ndarray, k: int):
    """index.search, on one thread for a few queries: OpenMP threads wait busily, and on a busy 2-core
    machine one photo's query over 16,000 vectors took 60 ms on 2 threads against 6 ms on one."""
    with _faiss_threads(1 if len(vecs) < FEW_QUERIES else None):
        return index.search(vecs, k)


@contextlib.contextmanager
def _faiss_threads(n: int | None):
    """faiss's OpenMP threads limited to n within the block (None: unchanged)."""
    import faiss
    threads = faiss.omp_get_max_threads()
    if n is not None:
        faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


class Embeddings:
    """A run's stored embeddings: rows (`frame`), unit vectors (`vectors`) and a faiss index per set
    of splits searched, made on first use: the stored inverted file for IVF_SPLITS when the metadata
    names one and `index_file` holds it unchanged, else exact inner product (= cosine on unit vectors)."""

    def __init__(self, frame: pd.DataFrame, vectors: np.ndarray, meta: dict | None = None, index_file=None):
        self.frame, self.vectors, self.meta = frame, np.ascontiguousarray(vectors, np.float32), meta or {}
        self.index_file = index_file
        self._indexes: dict = {}
        self._split = frame["split"].astype(str).to_numpy()

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def served(self) -> str:
        """The index that answers searches of the training photos: "exact" or "ivf nlist=... nprobe=..."."""
        return self._index(IVF_SPLITS)[2]

    def _index(self, splits):
        key = tuple(sorted(splits))
        if key not in self._indexes:
            import faiss
            rows = np.flatnonzero(np.isin(self._split, key))
            stored = self._stored(len(rows)) if key == tuple(sorted(IVF_SPLITS)) else None
            if stored is not None:
                self._indexes[key] = (stored, rows, self.meta["index"])
            else:
                index = faiss.IndexFlatIP(self.vectors.shape[1])
                index.add(self.vectors[rows])
                self._indexes[key] = (index, rows, "exact")
        return self._indexes[key]

    def _stored(self, n: int):
        """The stored inverted file, or None when none is named, or the file is missing or not the one the
        rows file names (its SHA-256; the rows name the vectors' too, checked by load): exact then."""
        import faiss
        digest = self.meta.get("index_sha256")
        if not digest or self.index_file is None:
            return None
        try:
            data = self.index_file.read_bytes()
        except OSError:
            return None
        if hashlib.sha256(data).hexdigest() != digest:
            return None
        index = faiss.deserialize_index(np.frombuffer(data, np.uint8))
        return index if (index.ntotal, index.d) == (n, self.vectors.shape[1]) else None

    def search(self, queries, k: int, splits=("train",)) -> tuple[np.ndarray, np.ndarray]:
        """(similarities (q, k) float32, rows (q, k) int64) of each query's k nearest rows of
        `splits`, best first, padded with nan / -1. `queries`: row indices (a row never returns
        itself) or vectors (q, D), unit length."""
        q = np.asarray(queries)
        own = q.astype(np.int64) if q.ndim == 1 else None
        vecs = self.vectors[own] if own is not None else np.ascontiguousarray(q, np.float32).reshape(len(q), -1)
        if vecs.shape[1] != self.vectors.shape[1]:
            raise UserError(f"These vectors have {vecs.shape[1]} dimensions but the run's embeddings "
                            f"{self.vectors.shape[1]}; embed the photo with the same run.")
        index, rows, _ = self._index(splits)
        extra = 1 if own is not None else 0
        sims, found = _search(index, vecs, min(k + extra, index.ntotal)) if index.ntotal else (
            np.zeros((len(vecs), 0), np.float32), np.zeros((len(vecs), 0), np.int64))
        sims = np.where(found >= 0, sims, np.nan).astype(np.float32)   # an inverted file's short lists: -1
        found = np.where(found >= 0, rows[np.clip(found, 0, None)], -1) if len(rows) else found
        if own is not None:                 # drop the query itself (else the last, the (k+1)-th)
            keep = found != own[:, None]
            keep[keep.all(1), -1] = False
            found = found[keep].reshape(len(vecs), -1)
            sims = sims[keep].reshape(len(vecs), -1)
        pad = k - found.shape[1]
        if pad > 0:
            found = np.pad(found, ((0, 0), (0, pad)), constant_values=-1)
            sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=np.nan)
        return sims[:, :k], found[:, :k].astype(np.int64)

    def neighbours(self, queries, k: int = K_NEIGHBOURS, splits=("train",)) -> list[pd.DataFrame]:
        """One frame per query (path, split, label, name, similarity, row), most similar first."""
        sims, found = self.search(queries, k, splits)
        cols = ["path", "split", "label", "name"]
        out = []
        for s, r in zip(sims, found):
            keep = r >= 0
            f = self.frame.iloc[r[keep]][cols].reset_index(drop=True)
            f["similarity"] = s[keep].astype(float)
            f["row"] = r[keep]
            out.append(f[list(NEIGHBOUR_COLUMNS)])
        return out

    def classify(self, queries, k: int = K_CLASSIFY, splits=("train",)) -> Votes:
        """kNN: the k nearest training photos vote for their class with their similarity; the class
        with the largest sum wins (ties: the closer photo). Confidence = the winner's best
        similarity, as the 2020 Landmark Recognition winners scored: a photo far from every training
        photo (likely no known landmark) ranks low, where a normalised vote says 1.0 whenever the k
        agree, however far they are. `queries` as in search()."""
        sims, rows = self.search(queries, k, splits)
        q = len(rows)
        targets = self.frame["target"].to_numpy().astype(np.int64)
        valid = rows >= 0
        qi = np.repeat(np.arange(q), k).reshape(q, k)[valid]
        cls, sim = targets[rows[valid]], sims[valid].astype(np.float64)
        n_cls = int(targets.max()) + 1 if len(targets) else 1
        keys, inv = np.unique(qi * n_cls + cls, return_inverse=True)
        vote = np.bincount(inv, weights=sim, minlength=len(keys))
        best = np.full(len(keys), -np.inf)
        np.maximum.at(best, inv, sim)
        kq, kc = keys // n_cls, keys % n_cls
        order = np.lexsort((-best, -vote, kq))           # per query: most votes, then the closest
        kq, kc, best = kq[order], kc[order], best[order]
        rank = np.arange(len(kq)) - np.searchsorted(kq, kq)
        top = np.full((q, TOP), -1, np.int64)
        top_sim = np.full((q, TOP), np.nan)
        m = rank < TOP
        top[kq[m], rank[m]], top_sim[kq[m], rank[m]] = kc[m], best[m]
        return Votes(top[:, 0].copy(), np.nan_to_num(top_sim[:, 0], nan=-1.0), top, top_sim, rows, sims)


def nearest_similarity(reference: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Each query's cosine similarity (float64) to its nearest reference vector (both unit length,
    (n, D)): an exact faiss inner-product index over the references, built once per call."""
    import faiss
    reference = np.ascontiguousarray(reference, np.float32)
    queries = np.ascontiguousarray(queries, np.float32).reshape(len(queries), -1)
    if not len(reference):
        raise ValueError("no reference vector")
    if reference.shape[1] != queries.shape[1]:
        raise UserError(f"The distractor vectors have {reference.shape[1]} dimensions but the queries "
                        f"{queries.shape[1]}; embed both with the same run.")
    index = faiss.IndexFlatIP(reference.shape[1])
    index.add(reference)
    sims, _ = _search(index, queries, 1)
    return sims[:, 0].astype(np.float64)


def penalise(conf, queries: np.ndarray, reference: np.ndarray, weight: float = 1.0) -> np.ndarray:
    """The distractor penalty: conf - weight x the query's similarity to its nearest distractor
    (`reference`: unit vectors of photos of no known landmark). A query that looks like a
    non-landmark sinks in the GAP ranking, one far from every distractor keeps its place: the
    non-landmark suppression of the Landmark Recognition solutions (Ozaki & Yokoo 2019,
    arXiv:1906.04087; Henkel & Singer 2020, arXiv:2010.01650), in its simplest form, one subtraction
    with one weight (default 1) and no re-ranking of the classes."""
    conf = np.asarray(conf, np.float64)
    if not len(conf):
        return conf
    return conf - weight * nearest_similarity(reference, queries)


def knn_evaluation(emb: Embeddings, split: str, n_classes: int, k: int = K_CLASSIFY) -> tuple[dict, object]:
    """The kNN classifier's metrics on a split's stored rows (core.train.metrics, as the softmax
    figures): each image's k nearest TRAIN photos vote (a train image leaves itself out)."""
    from core.train import metrics
    rows = np.flatnonzero(emb.frame["split"].astype(str).to_numpy() == split)
    if not len(rows):
        raise UserError(f"The run's embeddings hold no {split} photo to classify.")
    v = emb.classify(rows, k)
    target = emb.frame["target"].to_numpy().astype(np.int64)[rows]
    out = metrics.Outputs(target, v.pred, v.conf, v.top, np.zeros(len(rows)))
    m, confusion = metrics.evaluation(out, n_classes)
    m.pop("loss", None)                  # a vote has no likelihood: no loss
    return m, confusion


def require(run) -> Embeddings:
    """The run's embeddings, or one sentence saying how to compute them."""
    emb = load(run)
    if emb is None:
        raise UserError(f"Run {run.id} has no embeddings yet, which the kNN classifier needs; compute them with "
                        f"python -m core embed {run.id}.")
    return emb


def answer(emb: Embeddings, predictor, x: torch.Tensor, k: int = K_CLASSIFY, top: int = TOP) -> dict:
    """The kNN classifier's answer for one image tensor (1, 3, S, S) (the predictor's model embeds
    it): its top classes with their best similarity, and the k training photos that voted (path,
    split, label, name, similarity, row; most similar first). The one function `predict --classifier
    knn` and the Classify page call."""
    vec = features.embed(predictor.model, x)
    v = emb.classify(vec, k)
    rows = [{"class": int(c), "label": predictor.labels[c], "name": predictor.names[c], "similarity": float(s)}
            for c, s in zip(v.top[0][:top], v.top_sim[0][:top]) if c >= 0]
    voters = v.rows[0][v.rows[0] >= 0]
    near = emb.frame.iloc[voters][["path", "split", "label", "name"]].reset_index(drop=True)
    near["similarity"], near["row"] = v.sims[0][: len(voters)].astype(float), voters
    return {"classifier": "knn", "k": k, "top": rows, "neighbours": near.to_dict("records")}
