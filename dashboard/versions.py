"""The "new version" form (issue 22): exclude or relabel chosen photos into a new version of the
data set (core.data.versions: a list of changes beside it; the photos are never modified), then
"Use it on every page". Pages that select photos (Evaluate's confusion cells, label issues) call
`version_form(data_root, paths, key)`.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core.errors import UserError
from dashboard.common import counts_of, use_dataset, user_error

EXCLUDE, RELABEL = "Exclude them", "Relabel them"
SHOWN = 20     # selected photos listed in the form


def default_name(data_root: str) -> str:
    """"<data set>-v<k>", the first k not taken."""
    from core.data import registry, versions
    base = registry.name_of(versions.read_version(data_root).base if versions.is_version(data_root) else data_root)
    base = "".join(c if c.isalnum() or c in " .-_()" else "-" for c in base)[:56] or "data"
    k = 1
    while registry.by_name(f"{base}-v{k}") or (versions.versions_dir() / f"{base}-v{k}").exists():
        k += 1
    return f"{base}-v{k}"


def _selected(paths: list[str], relabel_to: dict | None) -> None:
    shown = [str(p) for p in paths[:SHOWN]]
    df = pd.DataFrame({"photo": shown})
    if relabel_to:
        df["new label"] = [str(relabel_to.get(p, "")) for p in paths[:SHOWN]]
    st.dataframe(df, hide_index=True, height=min(300, 38 + 35 * len(df)))
    if len(paths) > SHOWN:
        st.caption(f"… and {len(paths) - SHOWN} more.")


def _relabel(paths: list[str], relabel_to: dict | None, label: str | None) -> dict:
    if not relabel_to:
        return {p: label for p in paths}
    lacking = [p for p in paths if not str(relabel_to.get(p, "")).strip()]
    if lacking:
        raise UserError(f"{lacking[0]} has no new label here; exclude it, or relabel it on its own.")
    return {p: relabel_to[p] for p in paths}


def _create(data_root: str, paths: list[str], key: str, relabel_to: dict | None) -> str | None:
    """The form; the new version's name once it was made (None before, or on bad input)."""
    from core.data.versions import make_version
    ss = st.session_state
    if ss.pop(f"{key}_renew", False) or f"{key}_name" not in ss:   # the next version gets the next name
        ss[f"{key}_name"] = default_name(data_root)
    with st.form(f"{key}_form", border=True):
        st.markdown(f"**New version of the data set** with the {len(paths)} selected photo"
                    f"{'s' if len(paths) != 1 else ''} (the photos themselves are never modified)")
        _selected(paths, relabel_to)
        name = st.text_input("Version name", key=f"{key}_name")
        action = st.radio("Change", [RELABEL, EXCLUDE] if relabel_to else [EXCLUDE, RELABEL], key=f"{key}_action",
                          horizontal=True, help="Excluded photos leave the version; relabelled ones move to "
                                                "another class. The base data set keeps them as they are.")
        label = None
        if not relabel_to:
            labels = [str(x) for x in counts_of(data_root).index]
            label = st.selectbox("New label (when relabelling)", labels, key=f"{key}_label")
        reason = st.text_input("Reason (kept with each change)", key=f"{key}_reason",
                               placeholder="e.g. wrong landmark, duplicate, not a photo of the place")
        if not st.form_submit_button("Create the version", type="primary", icon="🧬"):
            return None
    if not paths:
        user_error(UserError("Select at least one photo to exclude or relabel."))
        return None
    try:
        relabel = _relabel(paths, relabel_to, label) if action == RELABEL else None
        make_version(data_root, name, exclude=paths if action == EXCLUDE else (), relabel=relabel, reason=reason)
    except UserError as e:
        user_error(e)
        return None
    ss[f"{key}_renew"] = True
    return name.strip()


def version_form(data_root: str, paths: list[str], key: str, relabel_to: dict | None = None) -> None:
    """A small form that makes a version of `data_root` (a data set folder or a version) without the
    selected `paths` (exclude) or with them under a new label (relabel: `relabel_to`'s per-photo
    labels when given, else one class chosen in the form); then offers "Use it on every page".
    `paths`: relative to the data set folder (as `inspect` gives them) or absolute. `key`: a prefix
    for the widget keys, unique on the page."""
    from core.data import registry, versions
    made = _create(str(data_root), [str(p) for p in paths], key, relabel_to)
    if made:
        st.session_state[f"{key}_made"] = made
    made = st.session_state.get(f"{key}_made")
    entry = registry.by_name(made) if made else None
    if not entry:
        return
    v = versions.read_version(entry["path"])
    st.success(f"Version **{made}** of {registry.name_of(str(v.base))}: {v.summary()}. Train on it like any data "
               f"set; its runs keep the base's holdout.", icon="✅")
    if st.button(f"Use {made} on every page", key=f"{key}_use", icon="👉"):
        use_dataset(made)
        st.session_state.pop(f"{key}_made", None)
        st.rerun()


# ------------------------------------------------------------------ what pages show of a version

def base_of(root) -> str:
    """A version's base data set folder (where GLDv2's names file lies); any other folder itself."""
    from core.data import versions
    return str(versions.read_version(root).base) if root and versions.is_version(root) else str(root)


def version_summary(data_root) -> None:
    """On the Dataset page: a version's base and its list of changes (nothing for a plain data set)."""
    from core.data import registry, versions
    if not data_root or not versions.is_version(data_root):
        return
    try:
        v = versions.read_version(data_root)
    except UserError as e:
        user_error(e)
        return
    parent = f" (made from the version {Path(v.parent_version).name})" if v.parent_version else ""
    st.info(f"Version **{v.name}** of **{registry.name_of(str(v.base))}** (`{v.base}`){parent}: {v.summary()}. "
            f"The photos and CSVs of the base are unchanged; the changes below are applied when it is read.",
            icon="🧬")
    with st.expander(f"Changes ({len(v.changes)})"):
        st.dataframe(v.changes.rename(columns={"new_label": "new label"}), hide_index=True,
                     column_config={"path": st.column_config.TextColumn("photo", width="large")})


@st.cache_data(show_spinner=False, max_entries=16)
def _holdout_of(split_file: str, mtime: float) -> frozenset:
    from core.data.splits import load_manifest
    m = load_manifest(Path(split_file))
    return frozenset(m.loc[m["split"] == "holdout", "path"])


def _holdout(run_id: str) -> frozenset | None:
    """The paths of a run's holdout (read once per split file: millions of rows at GLDv2 scale)."""
    from dashboard.common import store
    f = store().run(run_id).split_file
    return _holdout_of(str(f), f.stat().st_mtime) if f.exists() else None


def relation_line(run_a: dict, run_b: dict, names: dict) -> str | None:
    """One line when two runs' data sets are a version and its base, or two versions of one base:
    "B trained on version 'clean-1' of A's data set: 2 excluded, 0 relabelled; same holdout: yes"."""
    from core.data import versions
    da, db = (Path(str(r["config"].get("data") or "")) for r in (run_a, run_b))
    try:
        va, vb = (versions.read_version(d) if d.name and versions.is_version(d) else None for d in (da, db))
    except UserError:
        return None
    a, b = names[run_a["run_id"]], names[run_b["run_id"]]
    if vb and not va and vb.base == da.resolve():
        head = f"{b} trained on version '{vb.name}' of {a}'s data set: {vb.summary()}"
    elif va and not vb and va.base == db.resolve():
        head = f"{a} trained on version '{va.name}' of {b}'s data set: {va.summary()}"
    elif va and vb and va.base == vb.base and va.root != vb.root:
        head = (f"{a} and {b} trained on versions '{va.name}' ({va.summary()}) and '{vb.name}' ({vb.summary()}) "
                f"of one data set")
    else:
        return None
    ha, hb = _holdout(run_a["run_id"]), _holdout(run_b["run_id"])
    if ha is None or hb is None:
        return head + "."
    if ha == hb:
        same = "yes"
    else:
        smaller, larger = sorted((ha, hb), key=len)
        same = (f"yes, less {len(larger - smaller)} excluded image(s)" if smaller < larger and _excluded(
            (va, vb), larger - smaller) else "no")
    return f"{head}; same holdout: {same}."


def _excluded(vs, paths: set) -> bool:
    """Whether every one of `paths` (absolute) is excluded by one of the versions `vs`."""
    gone = set()
    for v in vs:
        if v is not None:
            f = v.final()
            gone |= {str(v.base / p) for p in f.loc[f["action"] == "exclude", "path"]}
    return paths <= gone
