"""The three names of ``typing`` the package needs at run time — ``Generic``, ``TypeVar``
and ``overload`` — without importing ``typing``, which costs a fresh interpreter more than
every other module a pool needs (``re`` comes with it). Type checkers see ``typing``'s own;
at run time ``Pool[int, str]`` is ``Pool``, and an overload is its last definition.

Annotations are text (``from __future__ import annotations``); ``readable_annotations``
makes ``help()`` and ``inspect.signature`` show them as code rather than quoted."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Generic as Generic
    from typing import TypeVar as TypeVar
    from typing import overload as overload
else:

    class TypeVar:
        """Names a type variable; nothing is checked at run time."""

        def __init__(self, name, *constraints, bound=None, covariant=False, contravariant=False):
            self.__name__ = name

        def __repr__(self):
            return "~" + self.__name__

    class Generic:
        """A class parametrised for type checkers: subscripting gives the class itself."""

        __slots__ = ()

        def __class_getitem__(cls, params):
            return cls

    def overload(func):
        """Type checkers read the overloads; the definition that follows them is the one."""
        return func


class _Annotation(str):
    """An annotation kept as text that shows as code: ``Optional[int]``, not ``'Optional[int]'``.
    Its names are imported for type checkers only: ``typing.get_type_hints`` cannot evaluate
    it, the price of not importing ``typing``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


def readable_annotations(*objects: object) -> None:
    """Makes the annotations of these functions, and of these classes' methods, show as code."""
    for obj in objects:
        members = list(vars(obj).values()) if isinstance(obj, type) else [obj]
        for member in members:
            func = getattr(member, "__func__", member)  # staticmethod, classmethod
            annotations = getattr(func, "__annotations__", None)
            if isinstance(annotations, dict) and annotations:
                func.__annotations__ = {name: _Annotation(a) if isinstance(a, str) else a
                                        for name, a in annotations.items()}


__all__ = ["Generic", "TypeVar", "overload", "readable_annotations"]
