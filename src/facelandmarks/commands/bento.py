"""``facelandmarks bento``: the champion into the BentoML model store, then ``bentoml build`` of a Bento serving it.

See :mod:`facelandmarks.serving.bento_model` for the store entry and the Bento's labels.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["bento", "bentoml_build_command"]

_TAG_PREFIX = "__tag__:"


def bentoml_build_command(bentofile: str | Path, model_tag: str, labels: dict[str, str]) -> list[str]:
    """``python -m bentoml build -f BENTOFILE -o tag --arg model=TAG --label k=v ...`` (run in the build context).

    ``--arg model=`` makes the service declare the store model, so the build packs it; the Bento keeps the argument
    and its service loads that model when served (:class:`facelandmarks.serving.service.BentoArgs`).
    """
    cmd = [sys.executable, "-m", "bentoml", "build", "-f", str(bentofile), "-o", "tag", "--arg", f"model={model_tag}"]
    for k, v in labels.items():
        cmd += ["--label", f"{k}={v}"]
    return cmd


def _parse_labels(items: list[str]) -> dict[str, str]:
    from facelandmarks.serving.bento_model import MODEL_LABELS

    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise typer.BadParameter(f"label {item!r} is not key=value", param_hint="--label")
        if key in MODEL_LABELS:
            raise typer.BadParameter(f"label {key!r} is read from the packed model, it cannot be set",
                                     param_hint="--label")
        out[key] = value
    return out


def bento(
    model: Annotated[str | None, typer.Option(help="MLflow model URI or checkpoint (default: serve.model_uri of "
                                                   "params.yaml or $FACELANDMARKS_MODEL_URI, i.e. "
                                                   "models:/facelandmarks@champion)")] = None,
    bentofile: Annotated[Path, typer.Option(help="the bentofile, relative to the build context (this folder)")] = Path(
        "bentofile.yaml"),
    label: Annotated[list[str] | None, typer.Option("--label", help="an extra Bento label key=value (repeatable)")
                     ] = None,
    import_only: Annotated[bool, typer.Option("--import-only", help="only put the model into the store")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="end with one JSON line: bento, model, labels")] = False,
) -> None:
    """Import the champion's checkpoint into the BentoML model store and build a Bento that serves it.

    The alias is resolved to one registry version, whose checkpoint goes into the store as
    ``facelandmarks:r<version>-<hash>`` (reused when already there). ``bentoml build`` (run in this folder) then
    packs it: the Bento serves that version without MLflow, and its labels ``model``, ``registered_model``,
    ``registry_version``, ``champion_version`` and ``checkpoint_sha256`` are read from the packed model. Serve
    it with ``bentoml serve <tag>``. Exits with 2 when the model cannot be found or read, 1 when the build fails.
    """
    from facelandmarks.inference.source import ModelSourceError
    from facelandmarks.model.checkpoint import CheckpointError
    from facelandmarks.serving.bento_model import bento_labels, import_model
    from facelandmarks.serving.config import load_serve_params

    extra = _parse_labels(label or [])
    if not import_only and not bentofile.is_file():
        raise typer.BadParameter(f"{bentofile}: no such bentofile", param_hint="--bentofile")
    try:
        cfg = load_serve_params()
        uri = model or cfg.model_uri
        stored = import_model(uri, cfg.tracking_uri)
    except (ModelSourceError, CheckpointError, ValueError) as e:
        typer.echo(f"bento: {e}", err=True)
        raise typer.Exit(2) from e
    reg = f"{stored.registry[0]} version {stored.registry[1]}" if stored.registry else "no registry version"
    typer.echo(f"{'found' if stored.reused else 'imported'} {stored.tag} ({reg}, checkpoint sha256 "
               f"{stored.checkpoint_sha256[:12]}) from {uri}", err=True)
    labels = {**extra, **bento_labels(stored, uri)}
    tag = None
    if not import_only:
        # run_command streams the build's output line by line
        from facelandmarks.flows.steps import CommandFailed, run_command

        log = logging.getLogger("facelandmarks.bento")
        if not log.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            log.addHandler(handler)
            log.setLevel(logging.INFO)
            log.propagate = False
        try:
            lines = run_command(bentoml_build_command(bentofile, stored.tag, labels), cwd=".", logger=log)
        except CommandFailed as e:
            typer.echo(f"bento: {e}", err=True)
            raise typer.Exit(1) from e
        tags = [line.split(_TAG_PREFIX, 1)[1].strip() for line in lines if _TAG_PREFIX in line]
        if not tags:
            typer.echo(f"bento: `bentoml build` printed no Bento tag (a line {_TAG_PREFIX}<name>:<version>)", err=True)
            raise typer.Exit(1)
        tag = tags[-1]
        typer.echo(f"built Bento {tag}; serve it with `bentoml serve {tag}`", err=True)
    if json_out:
        typer.echo(json.dumps({"bento": tag, "model": {"tag": stored.tag, "reused": stored.reused,
                                                       "checkpoint_sha256": stored.checkpoint_sha256,
                                                       "registry": list(stored.registry) if stored.registry else None,
                                                       "model_uri": stored.model_uri},
                               "labels": labels}))
    else:
        typer.echo(tag or stored.tag)
