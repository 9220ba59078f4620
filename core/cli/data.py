"""Data commands: demo-data, stats, download, dataset (version, versions)."""
from __future__ import annotations

import sys
import time

from core.cli.common import _abs, _run_here


def add_demo_data(sub) -> None:
    from core.data import DEMO_DEFAULTS
    p = sub.add_parser("demo-data", help="write the synthetic demo data set (GLDv2 layout)")
    p.add_argument("out")
    for k, v in DEMO_DEFAULTS.items():
        p.add_argument(f"--{k}", type=int, default=v, help=f"default {v}")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_demo_data)


def add_stats(sub) -> None:
    p = sub.add_parser("stats", help="class distribution and imbalance of a data set")
    p.add_argument("data")
    p.add_argument("--top", type=int, default=50)
    p.add_argument("--scan", action="store_true", help="decode the top classes' files and report unreadable ones "
                   "(automatic for a few thousand images)")
    p.add_argument("--no-scan", action="store_true")
    p.add_argument("--clean", action="store_true", help="GLDv2: count only the images in train_clean.csv")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_stats)


def add_download(sub) -> None:
    from core.data.download import DEFAULTS as DOWNLOAD
    p = sub.add_parser("download", help="get the images of the top-N Google Landmarks classes (URLs or tar shards)")
    p.add_argument("--csv", required=True, help="GLDv2 train.csv or the 2018 Kaggle CSV (id,url,landmark_id)")
    p.add_argument("--top", type=int, required=True, help="how many of the most frequent classes to get")
    p.add_argument("--clean", action="store_true", help="GLDv2: only the images in train_clean.csv beside the CSV")
    p.add_argument("--out", required=True, help="folder to write train.csv and train/<a>/<b>/<c>/<id>.jpg into")
    p.add_argument("--max-side", type=int, default=DOWNLOAD["max_side"],
                   help="shrink so the longer side is at most this (0: keep)")
    p.add_argument("--workers", type=int, default=DOWNLOAD["workers"], help="concurrent requests")
    p.add_argument("--shard", default=DOWNLOAD["shard"], metavar="K/N",
                   help="take the K-th of N disjoint shares (machines)")
    p.add_argument("--tars", nargs="+", default=None, metavar="DIR_OR_FILE",
                   help="extract from GLDv2's images_000.tar … instead of fetching URLs")
    p.add_argument("--allow-private", action="store_true",
                   help="also fetch from loopback and private addresses (a local mirror); metadata never")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_download)


def add_dataset(sub) -> None:
    p = sub.add_parser("dataset", help="data set versions: exclude or relabel images without touching the photos "
                                       "(dataset version DATA ...; dataset versions DATA)")
    acts = p.add_subparsers(dest="action", required=True)
    v = acts.add_parser("version", help="a new version of DATA (a data set folder or a version) with images "
                                        "excluded or relabelled; the photos and CSVs are never modified")
    v.add_argument("data")
    v.add_argument("--name", required=True, help="the version's name, as the data set pickers show it")
    v.add_argument("--exclude", metavar="FILE", help="paths to leave out, one a line (or a CSV with a path or "
                   "image column), relative to the data set folder as `inspect` lists them, or absolute")
    v.add_argument("--relabel", metavar="FILE", help="a CSV of path,new_label (header optional)")
    v.add_argument("--reason", default="", help="why, kept with each change")
    v.add_argument("--json", action="store_true")
    v.set_defaults(fn=cmd_dataset_version)
    ls = acts.add_parser("versions", help="the versions of DATA (its base's, when DATA is a version)")
    ls.add_argument("data")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(fn=cmd_dataset_versions)


def cmd_dataset_version(a) -> dict:
    from core.data import versions
    exclude = versions.read_path_list(a.exclude) if a.exclude else []
    relabel = versions.read_relabel_list(a.relabel) if a.relabel else {}
    out = versions.read_version(versions.make_version(_abs(a.data), a.name, exclude, relabel, a.reason)).as_dict()
    if not a.json:
        print(f"version {out['name']!r} of {out['base']}: {out['excluded']} excluded, {out['relabelled']} "
              f"relabelled, in {out['path']} (train on it with --data {out['path']})")
        return {}
    return out


def cmd_dataset_versions(a) -> dict:
    from core.data import versions
    found = [v.as_dict() for v in versions.versions_of(_abs(a.data))]
    if not a.json:
        for v in found:
            print(f"{v['name']}: {v['excluded']} excluded, {v['relabelled']} relabelled  {v['path']}")
        if not found:
            print(f"no versions of {_abs(a.data)} yet (make one with: python -m core dataset version)")
        return {}
    return {"data": _abs(a.data), "versions": found}


def cmd_demo_data(a) -> dict:
    def progress(p):
        done, total = p.get("done", 0), p.get("total", 0)
        print(f"\rgenerated {done}/{total}", end="" if done < total else "\n", file=sys.stderr)
    out = _run_here(a, "demo", {"out": _abs(a.out), "classes": a.classes,
                                "images": a.images, "size": a.size, "seed": a.seed}, on_progress=progress)
    info = out["info"]
    info["counts"] = {str(k): v for k, v in info["counts"].items()}
    return info


def cmd_stats(a) -> dict:
    from core.data.prepared import AUTO_SCAN_IMAGES
    from core.data.readers import imbalance, label_counts, missing_note
    counts, dups = label_counts(a.data, clean=a.clean)
    out = imbalance(counts, a.top)
    out["top"] = [{"label": str(l), "count": int(c)} for l, c in counts.head(a.top).items()]
    out["duplicates"] = dups       # rows listed twice with the same label: counted once, as training does
    # scanning decodes every file of the top classes (cached): automatic for small sets
    scan = a.scan or (not a.no_scan and out["top_n_images"] <= AUTO_SCAN_IMAGES)
    if scan:
        out["scan"] = _scan(a, counts.head(a.top).index)
        s = out["scan"]
        note = missing_note(s["missing"], s["checked"], s["missing_examples"])
        if note:   # on stderr: a warning, not a failure (stdout stays the report or the JSON)
            print(f"warning: {note}", file=sys.stderr)
    if not a.json:
        _print_stats(out, scan)
        return {}
    return out


def _scan(a, labels) -> dict:
    """Decode the files of `labels` that are on disk (cached; the scan job kind, as the Dataset page
    runs it); count those listed but missing."""
    r = _run_here(a, "scan", {"data": _abs(a.data), "clean": bool(a.clean),
                              "labels": [str(x) for x in labels]})
    return {"checked": r["checked"], "unreadable": len(r["reasons"]), "missing": r["missing"],
            "missing_examples": r["missing_examples"], "skipped": [{"path": p, "reason": w} for p, w in r["reasons"]]}


def _print_stats(out: dict, scan: bool) -> None:
    print(f"{out['images']:,} images in {out['classes']:,} classes; top {out['top_n']} hold "
          f"{out['top_n_share']:.1%}; largest/smallest {out['largest']}/{out['smallest']} ({out['ratio']:.1f}x)")
    w = max((len(r["label"]) for r in out["top"]), default=8)
    for row in out["top"]:
        print(f"  {row['label']:<{w}}  {row['count']:>9,}")
    d = out["duplicates"]
    if d["rows"]:
        print(f"duplicates: {d['rows']:,} row(s) list an image again under the same landmark, counted once "
              f"(e.g. {', '.join(d['ids'])})")
    if not scan:
        print(f"scan: skipped for {out['top_n_images']:,} images; pass --scan to decode them and list unreadable files")
        return
    s = out["scan"]
    print(f"scan: {s['checked']} files checked, {s['unreadable']} unreadable"
          + (f", {s['missing']:,} listed but not on disk (e.g. {s['missing_examples'][0]})" if s["missing"] else ""))
    for k in s["skipped"][:50]:
        print(f"  skipped {k['path']}: {k['reason']}")


def cmd_download(a) -> dict:
    from core.data.download import parse_shard
    shard = parse_shard(a.shard)
    args = {"csv": _abs(a.csv), "out": _abs(a.out),
            "top": a.top, "clean": a.clean, "max_side": a.max_side, "workers": a.workers,
            "shard": f"{shard[0]}/{shard[1]}" if isinstance(shard, tuple) else a.shard,
            "tars": [_abs(t) for t in a.tars] if a.tars else None,
            "allow_private": bool(a.allow_private) or None}
    try:
        out = _run_here(a, "download", args, on_progress=_download_printer())  # remembers the data set (the app's list)
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to resume (nothing on disk is fetched twice)",
              file=sys.stderr)
        raise SystemExit(130) from None
    print(file=sys.stderr)
    if out.get("warning"):
        print(f"warning: {out['warning']}", file=sys.stderr)
    if not a.json:
        _print_download(out)
        return {}
    return out


def _download_printer():
    """One progress line on stderr, redrawn at most twice a second (and at the end)."""
    from core.data.download import describe
    last = [0.0]

    def progress(c):
        done, total = c.get("done", 0), c.get("total", 0)
        now = time.monotonic()
        if done < total and now - last[0] < 0.5:
            return
        last[0] = now
        eta = c.get("eta_s")
        eta = f"  ETA {eta // 60:.0f}m{eta % 60:02.0f}s" if eta else ""
        print(f"\r{done:,}/{total:,}  {describe(c)}  {c.get('rate') or 0:.1f} img/s{eta}\033[K", end="",
              file=sys.stderr)
    return progress


def _print_download(out: dict) -> None:
    from core.data.download import LABELS, describe
    print(f"{out['on_disk']:,} of {out['listed']:,} images of the top {out['classes']} classes are in "
          f"{out['out']} ({describe(out)}); report: {out['out']}/download_report.json")
    short = [r for r in out["per_class"] if r["short"]]
    for r in short[:20]:
        why = ", ".join(f"{r[k]} {LABELS[k]}" for k in ("dead", "not_image", "failed", "no_url", "missing")
                        if r[k])
        print(f"  class {r['landmark_id']}: {r['on_disk']}/{r['listed']} on disk ({why or 'not tried yet'})")
    if len(short) > 20:
        print(f"  … and {len(short) - 20} more classes short of images (see the report)")
