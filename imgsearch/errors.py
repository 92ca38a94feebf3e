"""Typed errors raised by the library; messages say what to do next. The CLI renders them."""


class ImgsearchError(Exception):
    """Base class for every error imgsearch raises on purpose."""


class ConfigError(ImgsearchError):
    """A setting has a value that cannot be used."""


class PluginNotFoundError(ImgsearchError):
    """No captioner or embedder is registered under the requested name."""


class MissingDependencyError(ImgsearchError):
    """An optional package needed by the chosen backend is not installed."""


# The name on PyPI: "imgsearch" there is another project. The import package and the command
# are imgsearch.
DISTRIBUTION = "imgsearch-vlm"


def install_hint(extra: str = "") -> str:
    """How to install imgsearch with an extra, for the released package and for a clone."""
    if not extra:
        return f"pip install {DISTRIBUTION} (in a clone: pip install -e .)"
    return f"pip install '{DISTRIBUTION}[{extra}]' (in a clone: pip install -e '.[{extra}]')"


class CaptionerError(ImgsearchError):
    """The captioner could not be loaded or could not caption."""


class ApiAuthError(CaptionerError):
    """A captioning API refused the credentials (HTTP 401/403): the whole run stops."""


class EmbedderError(ImgsearchError):
    """The embedder could not be loaded or returned bad vectors."""


class StoreError(ImgsearchError):
    """The vector store could not be reached or used."""


class EmbedderMismatchError(StoreError):
    """The index was built with another embedding model than the one in use."""


class IndexBusyError(StoreError):
    """Another process holds the embedded index file."""


class IndexNotWritableError(StoreError):
    """The folder of the embedded index cannot be written to, which Milvus Lite needs even to read it."""


class DiskFullError(StoreError):
    """The disk holding the index has no room left for a write."""


class ClusterError(ImgsearchError):
    """The Ray cluster could not be reached, or could not do its part of an index run."""


class ImageLoadError(ImgsearchError):
    """A file is not a picture imgsearch can read."""


class DataDirNotPrivateError(ConfigError):
    """The data folder (or a folder imgsearch keeps in it) could be changed by another user."""
