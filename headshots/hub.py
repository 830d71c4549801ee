"""Models named by a Hugging Face Hub id: downloaded once, then loaded from the local cache without asking the Hub.

Every load of a model that a person may name by hub id goes through `cached_first` (SDXL's parts and pipelines
in headshots/sdxl.py, the caption model in train/captions.py); a local folder is loaded as it is.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from headshots.logs import get_logger

log = get_logger(__name__)
T = TypeVar("T")


def cached_first(source: str, loader: Callable[..., T], revision: str | None = None) -> T:
    """`loader(**options)` for a `from_pretrained` call: a hub id already downloaded is loaded from the local cache
    alone (local_files_only), since otherwise every load asks the Hub about each of its files, telling it the model
    id and this machine's address, and waits on the network; the Hub is asked only for what the cache lacks (the
    first download, a part not downloaded yet, or a download that stopped part-way). A local folder is loaded as it is."""
    if Path(source).expanduser().exists():
        return loader()
    if not _in_hub_cache(source, revision):
        _reach_hub(source, revision)
        return loader()
    try:
        return loader(local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - a file the cache lacks: OSError, or a tokenizer's own error without it
        said = (str(exc) or type(exc).__name__).splitlines()[0]
        log.info("%s is not all in the local cache (%s): fetching the rest from the Hub", source, said)
        _reach_hub(source, revision)
        return loader()


HUB_TIMEOUT_S = 20  # one question to the Hub before a download


@functools.cache  # a Hub that answered once is not asked again for every part of the same model
def _reach_hub(source: str, revision: str | None) -> None:
    """Ask the Hub about `source` once before downloading it, and raise ConnectionError at once when the Hub cannot
    be reached: a download would ask about each file with five retries and growing waits (SDXL holds about twenty
    files: ten minutes of retry warnings on a machine without network) before failing with the same cause. An
    answer of any kind (a model that does not exist, a gated one) is left for the download to report in its own words;
    offline mode (HF_HUB_OFFLINE) makes the download fail at once anyway."""
    import httpx2  # what huggingface_hub's requests raise
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        return
    try:
        HfApi().model_info(source, revision=revision, timeout=HUB_TIMEOUT_S)
    except httpx2.TransportError as exc:  # no route, no name, refused, a dead proxy, a timeout
        raise ConnectionError(f"the Hugging Face Hub ({constants.ENDPOINT}) cannot be reached ({exc}), and the model "
                              "is not in the local cache") from exc
    except Exception:  # noqa: BLE001 - the Hub answered: not found, gated, private... the download says which
        return


# What a download of each kind of model holds first: a pipeline's index, a single model's config (a VAE, a caption
# model), the UNet's config (training loads the parts one by one, never the index)
HUB_CACHE_PROBES = ("model_index.json", "config.json", "unet/config.json")


def _in_hub_cache(source: str, revision: str | None) -> bool:
    """Whether hub id `source` has a download in the local Hugging Face cache for `revision`."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return any(isinstance(try_to_load_from_cache(source, name, revision=revision), str) for name in HUB_CACHE_PROBES)
    except ValueError:  # not a valid hub id (HFValidationError): loading will say what is wrong
        return False
