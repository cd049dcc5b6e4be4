"""What a user sees of a job's error: the message itself, without tracebacks or the server's file paths.

The whole text goes to the worker's log; the job row keeps only what the user can act on.
"""

from __future__ import annotations

import re

from services.errors import AdvauditError

# An absolute path of two or more parts, not part of a URL or a fraction ("8/255" is not a path).
_PATH = re.compile(r"(?<![\w./:~-])/(?:[^\s/'\"`:,;()<>\[\]]+/)+[^\s/'\"`:,;()<>\[\]]*")
MAX_CHARS = 2000


def public_message(error: BaseException, aliases: dict[str, str] | None = None) -> str:
    """`error` as one readable message: known paths named (`aliases`: path → name), others cut to their file."""
    text = str(error) if isinstance(error, AdvauditError) else f"{type(error).__name__}: {error}"
    text = _innermost(text)
    for path, name in sorted((aliases or {}).items(), key=lambda item: -len(item[0])):
        if path:
            text = text.replace(path, name)
    text = _PATH.sub(lambda match: match[0].rstrip("/").rsplit("/", 1)[-1] or "…", text)
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 1] + "…"


def _innermost(text: str) -> str:
    """The original exception of a TorchScript interpreter error (its last line), else the text as it is."""
    if "Traceback of TorchScript" not in text:
        return text.strip()
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else text.strip()
    for prefix in ("builtins.", "torch.jit.Error: "):
        last = last.removeprefix(prefix)
    return f"the model's forward raised {last}"
