"""``fraud-platform bento ...``: the scoring service as a self-contained bento.

``bento build`` packs the service code (``models_bento/bentofile.yaml``: the modules the service
imports), its Python requirements and the registry's champion into a bento in the BentoML store
under the data directory (``<data dir>/bentoml/bentos``). The model is a bento argument
(``models_bento.model_loading.BentoArgs``) the service turns into a ``bentoml.models.BentoModel``
class attribute, which is how ``bentoml build`` knows to pack it. Offline: the bentofile does not
lock packages against an index.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from fraud_platform.names import MODEL_NAME
from fraud_platform.settings import Settings
from fraud_platform.tools.cli_common import fail, settings_or_exit

SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the checkout: fraud_platform/, models_bento/
BENTOFILE = Path("models_bento", "bentofile.yaml")

bento_app = typer.Typer(
    help="The scoring service as a bento (service code, requirements and model).",
    no_args_is_help=True,
)


@dataclass(frozen=True)
class BuiltBento:
    tag: str
    path: Path
    model_tag: str
    model_was_champion: bool
    model_bytes: int
    total_bytes: int
    exported_to: Path | None


class BentoBuildError(RuntimeError):
    """The bento cannot be built as asked; the message says what to do."""


def _use_platform_store(home: Path) -> None:
    """Point BentoML (this process) at the platform's model and bento stores under ``home``."""
    import bentoml  # noqa: F401  (configures the container before we point it at `home`)
    from bentoml._internal.bento import BentoStore
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models import ModelStore

    for sub in ("models", "bentos", "tmp"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    BentoMLContainer.bentoml_home.set(str(home))
    BentoMLContainer.model_store.set(ModelStore(str(home / "models")))
    BentoMLContainer.bento_store.set(BentoStore(str(home / "bentos")))
    BentoMLContainer.tmp_bento_store_dir.set(str(home / "tmp"))


def _model_to_bundle(settings: Settings, model_tag: str | None) -> tuple[Any, bool]:
    """The model-store entry to pack (``model_tag``, default the registry's champion) and
    whether it is the champion."""
    import bentoml
    from bentoml.exceptions import NotFound

    from fraud_platform.lib.serving import registry
    from fraud_platform.lib.storage.delta import DeltaStore

    delta = DeltaStore(settings.delta_uri, settings.delta_storage_options)
    champion = registry.champion(delta, MODEL_NAME)
    wanted = model_tag or champion
    if wanted is None:
        raise BentoBuildError(
            f"no champion of {MODEL_NAME} in {delta.uri(registry.TABLE)}: train one "
            "(`fraud-platform demo` or `fraud-platform materialize`), promote one "
            "(`fraud-platform models promote TAG`) or name one with --model"
        )
    try:
        entry = bentoml.models.get(wanted)
    except NotFound:
        raise BentoBuildError(
            f"model {wanted} is not in the model store {settings.bentoml_home / 'models'}"
        ) from None
    return entry, str(entry.tag) == champion


def build_bento(
    settings: Settings, *, model_tag: str | None = None, export_to: Path | None = None
) -> BuiltBento:
    """Build the bento with the champion (or ``model_tag``) into the store under the data
    directory; with ``export_to``, also write it as one archive (``bentoml export``: the model
    files included) there."""
    bentofile = SOURCE_ROOT / BENTOFILE
    if not bentofile.is_file():
        raise BentoBuildError(
            f"{bentofile} not found: build the bento from a checkout of the repository"
        )
    _use_platform_store(settings.bentoml_home)
    entry, was_champion = _model_to_bundle(settings, model_tag)

    import bentoml

    model_tag = str(entry.tag)
    bento = bentoml.bentos.build_bentofile(
        str(bentofile),
        build_ctx=str(SOURCE_ROOT),
        labels={"model": model_tag, "model_was_champion": str(was_champion).lower()},
        args={"model_tag": model_tag, "model_was_champion": was_champion},
    )
    packed = [str(m.tag) for m in bento.info.all_models]
    if packed != [model_tag]:
        raise BentoBuildError(f"bento {bento.tag} packs {packed}, expected [{model_tag}]")
    exported = None
    if export_to is not None:
        exported = Path(bentoml.export_bento(bento.tag, str(export_to)))
    return BuiltBento(
        tag=str(bento.tag),
        path=Path(bento.path),
        model_tag=model_tag,
        model_was_champion=was_champion,
        model_bytes=entry.file_size,
        total_bytes=bento.total_size(),
        exported_to=exported,
    )


def _mib(size: int) -> str:
    return f"{size / 2**20:.2f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"


@bento_app.command("build")
def bento_build(
    model: Annotated[
        str | None,
        typer.Option(help="Model tag to pack (default: the registry's champion)."),
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(help="Also export the bento (model included) to this file or folder."),
    ] = None,
) -> None:
    """Build the scoring service into a bento that serves on its own: the service code, its
    requirements and the champion model (no registry or model store needed to serve it)."""
    settings = settings_or_exit()
    try:
        built = build_bento(settings, model_tag=model, export_to=export)
    except BentoBuildError as exc:
        fail(str(exc))
    role = "the champion" if built.model_was_champion else "not the champion"
    typer.echo(f"bento {built.tag}")
    typer.echo(f"  model {built.model_tag} ({role}), {_mib(built.model_bytes)}")
    typer.echo(f"  size {_mib(built.total_bytes)} with the model ({built.total_bytes} bytes)")
    typer.echo(f"  store {built.path}")
    if built.exported_to is not None:
        typer.echo(f"  exported {built.exported_to}")
    typer.echo(
        f"serve it: BENTOML_HOME={settings.bentoml_home} bentoml serve {built.tag}; "
        f"image: bentoml containerize {built.tag} (needs a Docker engine)"
    )
