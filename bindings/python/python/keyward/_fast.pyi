# Types of keyward._fast, the native part of the package (src/python.rs),
# loaded by keyward._store from the package's shared library.
from datetime import datetime
from typing import Any, Callable, Optional, Tuple

from keyward._generated import Denial

class Verdict:
    """The answer of Store.verify. True when the key was admitted."""

    valid: bool
    denial: Optional[Denial]
    key_id: Optional[str]
    generation: int
    in_grace: bool
    rotated_at: Optional[datetime]
    owner: Optional[str]
    retry_after: Optional[float]
    scopes: Tuple[str, ...]
    def __init__(
        self,
        valid: bool,
        denial: Optional[Denial],
        key_id: Optional[str],
        generation: int,
        in_grace: bool = ...,
        rotated_at: Optional[datetime] = ...,
        owner: Optional[str] = ...,
        retry_after: Optional[float] = ...,
        scopes: Optional[Tuple[str, ...]] = ...,
    ) -> None: ...
    def __bool__(self) -> bool: ...

class Gate:
    calls: int
    closing: bool
    def __init__(self, store: int) -> None: ...
    def enter(self) -> bool: ...
    def leave(self) -> None: ...
    def take(self, timeout: Optional[float] = ...) -> bool: ...
    def verify(self, key: Any, ip: Any, integration: Any = ..., scope: Any = ...) -> Optional[Verdict]: ...

def bind(denials: Tuple[Optional[Denial], ...], datetime: Callable[[int], datetime]) -> None: ...
