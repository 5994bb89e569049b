"""Retrieval: index, search, zero-shot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmfuse.cli.app import (
    Opt,
    app,
    friendly,
    out,
    writable_file,
    writable_folder,
)
from mmfuse.cli.render import print_hits
from mmfuse.errors import ConfigError


def _retrieval_model(run: Path):
    """A saved retrieval model, or a CLIP-style folder named as hf:DIR (used untrained)."""
    from mmfuse import load
    from mmfuse.retrieval.predictor import RetrievalPredictor

    if str(run).startswith("hf:"):
        return RetrievalPredictor.from_backbone(str(run))
    model = load(run)
    if not isinstance(model, RetrievalPredictor):
        raise ConfigError(f"{run} is not a retrieval model (train one with --task retrieval)")
    return model


@app.command()
@friendly
def index(
    run: Annotated[Path, typer.Argument(help="Retrieval model folder, or hf:DIR (a CLIP-style "
                                              "folder, used as it is)")],
    out_path: Annotated[Path, Opt("--out", help="Index folder to write", callback=writable_folder)],
    images: Annotated[Path | None, Opt(help="Folder of images (recursive)")] = None,
    data: Annotated[Path | None, Opt(help="Manifest whose image column is indexed")] = None,
    texts: Annotated[Path | None, Opt(help="Manifest whose text column is indexed")] = None,
) -> None:
    """Embed a folder of images (or a manifest's images or texts) once, for search."""
    from mmfuse.data.manifest import read_manifest
    from mmfuse.retrieval.predictor import list_images

    model = _retrieval_model(run)
    if sum(x is not None for x in (images, data, texts)) != 1:
        raise ConfigError("name exactly one of --images DIR, --data MANIFEST, --texts MANIFEST")
    if images is not None:
        kind, values = "image", list_images(images)
    elif data is not None:
        frame = read_manifest(data)
        base = Path(frame.attrs["base_dir"])
        kind, values = "image", [base / p for p in frame[model.image_col]]
    else:
        kind, values = "text", _texts_of(model, texts)  # type: ignore[arg-type]
    count = model.write_index(kind, values, out_path)
    out.print(f"{count} {kind}s indexed in {out_path}")


def _texts_of(model, manifest: Path) -> list[str]:
    from mmfuse.data.manifest import read_manifest
    from mmfuse.data.validate import check_columns

    frame = read_manifest(manifest)
    check_columns(frame, {model.text_col: "the model's text column"})
    return [str(t) for t in frame[model.text_col].dropna().unique()]


@app.command()
@friendly
def search(
    index_path: Annotated[Path, typer.Argument(help="Index folder from `mmfuse index`")],
    query: Annotated[str | None, typer.Argument(help="Text query")] = None,
    image: Annotated[Path | None, Opt(help="Query by an image instead of text")] = None,
    texts: Annotated[Path | None, Opt(help="Search these texts (manifest) instead")] = None,
    top: Annotated[int, Opt(help="How many results")] = 5,
    model_dir: Annotated[Path | None, Opt("--model", help="Model folder (default: the "
                                          "index's)")] = None,
    as_json: Annotated[bool, Opt("--json", help="Print JSON")] = False,
) -> None:
    """Search an index by text (or by image), best matches first."""
    import json

    from mmfuse.retrieval.index import EmbeddingIndex

    built = EmbeddingIndex.load(index_path)
    model = _retrieval_model(model_dir or Path(built.model_dir))
    if (query is None) == (image is None):
        raise ConfigError('give a text query or --image PATH (not both)')
    if texts is not None:
        built = model.index_texts(_texts_of(model, texts))
    else:
        model.check_index(built)
    vector = model.embed_images([image]) if image is not None else model.embed_texts([query])
    wanted = "image" if image is None else "text"
    if built.kind != wanted:
        raise ConfigError(f"this index holds {built.kind}s; a {'text' if image is None else 'image'}"
                          f" query searches {wanted}s (for images by image, search --texts)")
    hits = built.search(vector, top)[0]
    if as_json:
        typer.echo(json.dumps([{"rank": i + 1, "item": item, "score": score}
                               for i, (item, score) in enumerate(hits)], indent=2))
        return
    print_hits(hits, built.kind, f"top {len(hits)} for {query or image}")


@app.command("zero-shot")
@friendly
def zero_shot(
    run: Annotated[Path, typer.Argument(help="Retrieval model folder, or hf:DIR (a CLIP-style "
                                              "folder, used as it is)")],
    data: Annotated[Path, Opt(help="Manifest of images (and optionally true labels); no "
                                   "text column needed")],
    labels: Annotated[str, Opt(help="Comma-separated label names")],
    template: Annotated[str, Opt(help="Prompt, {} is the label")] = "{}",
    image_col: Annotated[str | None, Opt(help="Image column (default: the model's)")] = None,
    label_col: Annotated[str | None, Opt(help="Column of true labels, to score against "
                                              "(default: the model's label column)")] = None,
    output: Annotated[Path, Opt(help="CSV of predictions", callback=writable_file)] = Path("zero_shot.csv"),
) -> None:
    """Classify images by text prompts in the shared space (no training on these labels)."""
    from mmfuse.data.manifest import read_manifest
    from mmfuse.data.validate import check_columns

    model = _retrieval_model(run)
    names = [x.strip() for x in labels.split(",") if x.strip()]
    manifest = read_manifest(data)
    if image_col is not None and image_col != model.image_col:
        check_columns(manifest, {image_col: "--image-col"})
        manifest = manifest.drop(columns=model.image_col, errors="ignore").rename(
            columns={image_col: model.image_col})
    frame = model.zero_shot(manifest, names, template)
    frame.to_csv(output, index=False)
    label_col = label_col or model.config.data.label_col
    if label_col in manifest.columns:
        truth = manifest[label_col].astype(str).to_numpy()[frame["row"].to_numpy() - 1]
        accuracy = float((truth == frame["prediction"].to_numpy()).mean())
        out.print(f"zero-shot accuracy against column '{label_col}': {accuracy:.4f}")
    out.print(f"{len(frame)} predictions written to {output}")
