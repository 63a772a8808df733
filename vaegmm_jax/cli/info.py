"""``vaegmm info DIR [--json]``: everything known about a saved model, from its JSON files
(no arrays are loaded), all from the live version."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from vaegmm_jax.cli.display import describe_threshold, say, short_list, table
from vaegmm_jax.cli.errors import InputError
from vaegmm_jax.cli.model_folder import check_model_dir, read_card
from vaegmm_jax.cli.reporting import metrics_rows
from vaegmm_jax.detectors.loading import detector_class
from vaegmm_jax.io.checkpoint import META_FILE, read_json, read_live, read_meta
from vaegmm_jax.io.model_card import history_summary
from vaegmm_jax.io.preprocessing import PREPROCESSING_FILE

__all__ = ["add_parser", "run", "model_info", "render_info"]


def add_parser(sub) -> None:
    i = sub.add_parser("info", help="describe a saved model")
    i.add_argument("model_dir", metavar="DIR")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    info = model_info(args.model_dir)
    say(json.dumps(info, indent=2) if args.json else render_info(info))
    return 0


def model_info(model_dir: str | os.PathLike) -> dict[str, Any]:
    """Everything known about a saved model, from its JSON files (no arrays are loaded), all
    from the live version."""
    p = check_model_dir(model_dir)

    def read(live):
        meta = read_meta(live.folder)  # checked: a damaged file is named, with its field
        detector_class(meta["detector"], live.folder / META_FILE)
        prep_file = live.folder / PREPROCESSING_FILE
        prep = read_json(prep_file) if prep_file.is_file() else None
        if prep is not None and not isinstance(prep, dict):
            raise InputError(f"{prep_file} is corrupt: expected a JSON object")
        return meta, prep, read_card(live.folder) or {}, live

    meta, prep, card, live = read_live(p.resolve(), read)
    history = meta.get("history") or {}
    return {
        "path": str(p.resolve()),
        "version": live.version,
        "detector": meta.get("detector"),
        "config": meta.get("config"),
        "fit": meta.get("fit"),
        "input_shape": meta.get("input_shape"),
        "epochs_done": meta.get("epochs_done"),
        "threshold": meta.get("threshold"),
        "threshold_method": card.get("threshold"),
        "preprocessing": prep,
        "data": card.get("data"),
        "training": card.get("training"),
        "history_summary": history_summary(history),
        "metrics": card.get("metrics") or {},
        "versions": card.get("versions") or meta.get("versions"),
        "device": card.get("device"),
        "created_at": card.get("created_at"),
        "format_version": meta.get("format_version"),
    }


def render_info(info: dict[str, Any]) -> str:
    """:func:`model_info` as text."""
    cfg = info.get("config") or {}
    fit = info.get("fit") or {}
    prep = info.get("preprocessing") or {}
    data = info.get("data") or {}
    training = info.get("training") or {}
    versions = info.get("versions") or {}
    lines = [f"model folder   {info['path']}"]
    if info.get("version"):
        lines.append(f"version        {info['version']} (the live one; its files are in that folder)")
    lines.append(f"detector       {info.get('detector')}  (saved by vaegmm_jax {versions.get('vaegmm_jax', '?')},"
                 f" checkpoint format {info.get('format_version')})")
    simple = {k: v for k, v in cfg.items() if not isinstance(v, dict)}
    lines.append("config         " + ", ".join(f"{k}={v}" for k, v in simple.items()))
    for k, v in cfg.items():
        if isinstance(v, dict):
            lines.append(f"  {k:<12} " + ", ".join(f"{a}={b}" for a, b in v.items()))
    shape = info.get("input_shape") or []
    src = data.get("source")
    rows = data.get("n_rows_train")
    what = f"{shape[0]} features" if len(shape) == 1 else "x".join(str(s) for s in shape) + " per row"
    lines.append("data           " + (f"{rows} training rows" if rows is not None else "training rows") + f" x {what}"
                 + (f", from {src}" if src else ""))
    if prep:
        lines.append(f"features       {short_list(prep.get('feature_names'))}")
        sc = prep.get("scaler") or {}
        lines.append(f"scaling        {sc.get('kind', 'none')} (fitted on the training rows; applied by score/evaluate)")
        lines.append(f"id / label     {prep.get('id_column') or '-'} / {prep.get('label_column') or '-'}")
    else:
        lines.append("preprocessing  none recorded (saved from Python): inputs are used as given")
    lines.append(f"threshold      {describe_threshold(info.get('threshold_method'), info.get('threshold'))}")
    lr = training.get("learning_rate")
    opt = fit.get("optimizer") or {}
    lr_text = lr if lr is not None else opt.get("learning_rate", opt.get("name", "?"))
    lines.append(f"training       {info.get('epochs_done')} epochs, batch {fit.get('batch_size', '?')}, "
                 f"learning rate {lr_text}" + (f", preset {training['preset']}" if training.get("preset") else ""))
    other = {k: v for k, v in fit.items() if k not in ("epochs", "batch_size", "optimizer")}
    if other:
        lines.append("  fit settings " + ", ".join(f"{k}={v}" for k, v in other.items()))
    hs = info.get("history_summary") or {}
    if hs:
        rows_ = [(k, v["first"], v["last"], v["min"], v["min_epoch"]) for k, v in hs.items()]
        lines.append("training curve")
        lines.append(table(rows_, header=("term", "first", "last", "min", "at epoch"), indent="  "))
    for name, m in (info.get("metrics") or {}).items():
        lines.append(f"metrics on {name}")
        lines.append(table(metrics_rows(m), header=("metric", "value"), indent="  "))
    dev = info.get("device") or {}
    if versions:
        lines.append("versions       " + ", ".join(f"{k} {v}" for k, v in versions.items() if k != "device"))
    if dev:
        lines.append(f"device         {dev.get('backend')} ({dev.get('device_kind')})")
    if info.get("created_at"):
        lines.append(f"created        {info['created_at']}")
    return "\n".join(lines)
