"""The explorer: a model in the browser (`textvae serve`).

`explorer.py` answers the page's requests through the pipeline; `page.py` builds the Gradio page."""

from ..lazy import lazy_face

_NAMES = {
    "AppLimits": ".explorer",
    "Explorer": ".explorer",
    "build_app": ".page",
    "import_gradio": ".page",
    "launch_app": ".page",
    "shown_in_page": ".page",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_face(globals(), _NAMES)
